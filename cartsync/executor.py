"""Plan → transfers. The only code that calls a backend's write methods.

What is in the way of an upload first, data files (concurrently), catalogs
after all data succeeded, deletions last and only if every upload succeeded; each upload verified and retried
under the one retry policy.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import interrupt
from .backends.base import Backend
from .errors import AuthError
from .inventory import hashed, unchanged_or_raise
from .model import Action, Kind, Outcome, Plan, Report
from .progress import Bar
from .render import human_size
from .retry import GaveUp, RetryPolicy, describe_error

log = logging.getLogger(__name__)


def _without_key(text: str, *keys: str) -> str:
    """The report already names the file: drop a leading "<key>: " from the error."""
    for key in keys:
        if text.startswith(key + ": "):
            return text[len(key) + 2:]
    return text


class Executor:
    def __init__(self, backend: Backend, policy: RetryPolicy, jobs: int = 4, show_progress: bool | None = None) -> None:
        self.backend = backend
        self.policy = policy.sharing(backend.policy)    # one failure streak, one budget per target
        self.jobs = max(1, jobs)
        self.show_progress = sys.stderr.isatty() if show_progress is None else show_progress
        self._stopped = False      # an error that stops the target was met (e.g. the store refuses an ACL)
        self._lock = threading.Lock()
        self._written = 0                                   # uploads that succeeded
        self._denied: list[tuple[Action, BaseException]] = []   # uploads denied while none had succeeded

    def run(self, plan: Plan) -> Report:
        started = time.monotonic()
        report = Report(plan.target, plan.url, notes=list(plan.notes))
        if not plan.has_changes:
            report.other_retries = self.backend.retries
            report.seconds = time.monotonic() - started
            return report
        report.changes += self.backend.begin(plan)
        uploads = plan.uploads
        writes = uploads + plan.of(Kind.HEADERS)      # a header fix is a write: a catalog's waits for the data
        # largest first: a big file started last would upload alone at the end while the rest sit idle
        data = sorted((a for a in writes if not a.catalog), key=lambda a: -a.size)
        catalogs = [a for a in writes if a.catalog]
        clear = [a for a in plan.of(Kind.DELETE) if a.first]     # what is in the way of an upload: first
        deletes = [a for a in plan.of(Kind.DELETE) if not a.first]
        if plan.deletes_refused:          # the max_delete guard: the uploads go ahead, the deletes do not
            report.refused, deletes = deletes, []
        total = sum(a.size for a in uploads)
        with interrupt.aborting(self.backend.interrupted), Bar(plan.target, total, len(uploads),
                                                                 self.show_progress) as bar:
            self._each(clear, self._delete, report)
            if report.failed:
                report.skipped += data
                data = []
            self._each(data, lambda a: self._write(a, bar), report)
            self._collapse_denials(report)
            later = catalogs + deletes
            if report.failed:
                report.skipped += later
            else:
                self._each(catalogs, lambda a: self._write(a, bar), report)
                if report.failed:
                    report.skipped += deletes
                else:
                    self._each(deletes, self._delete, report)
        ok = not report.failed and not report.skipped and not report.refused
        try:
            report.changes += self.backend.finish(report, ok)
        except GaveUp as exc:      # the target went silent: the files' own errors already say so
            log.warning("%s: closing calls skipped: %s", plan.target, exc.message)
        except Exception as exc:
            if not (ok and self.backend.finish_is_cleanup):
                raise
            # everything was sent and verified; a failed tidy-up must not turn that into "error"
            report.warnings.append(f"the closing clean-up failed ({describe_error(exc)}); everything above was "
                                   "sent and verified, and the next apply tidies up again")
            log.debug("finish of %s failed", plan.target, exc_info=True)
        report.other_retries = self.backend.retries
        report.seconds = time.monotonic() - started
        return report

    def _each(self, actions: list[Action], fn: Callable[[Action], Outcome | None], report: Report) -> None:
        if not actions:
            return
        with ThreadPoolExecutor(max_workers=min(self.jobs, len(actions)), thread_name_prefix="xfer") as pool:
            for action, outcome in zip(actions, pool.map(fn, actions), strict=True):
                if outcome is None:
                    report.skipped.append(action)
                else:
                    report.outcomes.append(outcome)

    def _write(self, action: Action, bar: Bar) -> Outcome | None:
        return self._fix_headers(action) if action.kind is Kind.HEADERS else self._upload(action, bar)

    def _fix_headers(self, action: Action) -> Outcome:
        outcome = Outcome(action, ok=False)

        def on_retry(exc: BaseException) -> None:
            outcome.retries += 1
            log.info("retrying headers of %s after: %s", action.key, describe_error(exc))

        try:
            self.policy.call(lambda: self.backend.update_headers(action), on_retry)
        except Exception as exc:  # noqa: BLE001 — reported per file, the others go on
            outcome.error = _without_key(describe_error(exc), action.key)
            return outcome
        outcome.ok = True
        log.info("headers %s (%s)", action.key, action.reason)
        return outcome

    def _upload(self, action: Action, bar: Bar) -> Outcome | None:
        assert action.local is not None
        bar.start(action.key, action.size)
        try:
            return self._upload_one(action, bar)
        finally:
            bar.finish(action.key)

    def _upload_one(self, action: Action, bar: Bar) -> Outcome | None:
        """None: not attempted, because the target refused a feature every upload uses (reported once)."""
        assert action.local is not None
        if self._stopped:
            return None
        local = action.local
        outcome = Outcome(action, ok=False)
        sent = [0]

        def progress(n: int) -> None:
            # backends report bytes once the store acknowledged them (see progress.py)
            sent[0] += n
            bar.advance(action.key, n)

        def attempt() -> None:
            if sent[0]:
                bar.advance(action.key, -sent[0])
                sent[0] = 0
            nonlocal local
            unchanged_or_raise(local, "since it was hashed")
            local = hashed(local, self.backend.cache)    # a new file: hashed here, while others upload
            self.backend.upload(local, action.key, progress)
            # The store verified what it received; make sure that is still what we hashed.
            unchanged_or_raise(local, "while it was being uploaded")

        def on_retry(exc: BaseException) -> None:
            outcome.retries += 1

        try:
            self.policy.call(attempt, on_retry, what=action.key)
        except Exception as exc:  # noqa: BLE001 — every failure is reported per file, the others go on
            if getattr(exc, "stops_target", False):
                self._stopped = True
                if getattr(exc, "repeat", False):
                    return None
            if isinstance(exc, (AuthError, PermissionError)):
                self._note_denied(action, exc)
            outcome.error = _without_key(describe_error(exc), action.key, local.key)
            log.debug("upload of %s failed", action.key, exc_info=True)
            return outcome
        with self._lock:
            self._written += 1
        outcome.ok, outcome.bytes_sent = True, local.size
        log.info("%s %s (%s)", action.kind.value, action.key, human_size(local.size))
        return outcome

    def _note_denied(self, action: Action, exc: BaseException) -> None:
        """A second upload denied while none has succeeded: the credentials may not write here at all
        (a key-specific policy denies one file, not the first two), so no more are started."""
        with self._lock:
            if self._written == 0:
                self._denied.append((action, exc))
                if len(self._denied) >= 2:
                    self._stopped = True

    def _collapse_denials(self, report: Report) -> None:
        """Every upload tried was denied and none succeeded: one error for the target instead of one per file
        (the files are reported as not done)."""
        if len(self._denied) < 2 or self._written:
            return
        denied = {id(a) for a, _ in self._denied}
        keys = [a.key for a, _ in self._denied]
        report.skipped[:0] = [o.action for o in report.outcomes if id(o.action) in denied]
        report.outcomes = [o for o in report.outcomes if id(o.action) not in denied]
        exc = self._denied[0][1]
        hint = getattr(exc, "hint", None)
        report.stopped = (f"{_without_key(describe_error(exc), keys[0])}: the first {len(keys)} uploads were "
                          f"denied ({', '.join(keys[:3])}{', …' if len(keys) > 3 else ''}) and none succeeded, so no "
                          f"more were tried" + (f"; {hint}" if hint else ""))

    def _delete(self, action: Action) -> Outcome:
        assert action.remote is not None
        outcome = Outcome(action, ok=False)

        def on_retry(exc: BaseException) -> None:
            outcome.retries += 1

        try:
            self.policy.call(lambda: self.backend.delete(action.remote), on_retry,  # type: ignore[arg-type]
                             what=f"delete {action.key}")
        except Exception as exc:  # noqa: BLE001
            outcome.error = _without_key(describe_error(exc), action.key)
            return outcome
        outcome.ok = True
        log.info("delete %s", action.key)
        return outcome
