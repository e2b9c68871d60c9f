"""Plan → transfers. The only code that calls a backend's write methods.

Data files first (concurrently), catalogs after all data succeeded, deletions
last and only if every upload succeeded; each upload verified and retried
under the one retry policy.
"""
from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from tqdm import tqdm

from .backends.base import Backend
from .errors import CartsyncError, SourceChanged
from .inventory import hashed, still_same
from .model import Action, Kind, Outcome, Plan, Report
from .planner import is_catalog
from .render import human_size
from .retry import RetryPolicy

log = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, CartsyncError):
        return exc.message
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _without_key(text: str, *keys: str) -> str:
    """The report already names the file: drop a leading "<key>: " from the error."""
    for key in keys:
        if text.startswith(key + ": "):
            return text[len(key) + 2:]
    return text


class Executor:
    def __init__(self, backend: Backend, policy: RetryPolicy, jobs: int = 4, show_progress: bool | None = None) -> None:
        self.backend = backend
        self.policy = policy
        self.jobs = max(1, jobs)
        self.show_progress = sys.stderr.isatty() if show_progress is None else show_progress

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
        data = sorted((a for a in writes if not is_catalog(a.key)), key=lambda a: -a.size)
        catalogs = [a for a in writes if is_catalog(a.key)]
        deletes = plan.of(Kind.DELETE)
        total = sum(a.size for a in uploads)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                  disable=not self.show_progress or total == 0, desc=plan.target, dynamic_ncols=True) as bar:
            self._each(data, lambda a: self._write(a, bar), report)
            later = catalogs + deletes
            if report.failed:
                report.skipped += later
            else:
                self._each(catalogs, lambda a: self._write(a, bar), report)
                if report.failed:
                    report.skipped += deletes
                else:
                    self._each(deletes, self._delete, report)
        report.changes += self.backend.finish(report, not report.failed and not report.skipped)
        report.other_retries = self.backend.retries
        report.seconds = time.monotonic() - started
        return report

    def _each(self, actions: list[Action], fn: Callable[[Action], Outcome], report: Report) -> None:
        if not actions:
            return
        with ThreadPoolExecutor(max_workers=min(self.jobs, len(actions)), thread_name_prefix="xfer") as pool:
            report.outcomes += list(pool.map(fn, actions))

    def _write(self, action: Action, bar: tqdm) -> Outcome:
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

    def _upload(self, action: Action, bar: tqdm) -> Outcome:
        assert action.local is not None
        local = action.local
        outcome = Outcome(action, ok=False)
        sent = [0]

        def progress(n: int) -> None:
            sent[0] += n
            bar.update(n)

        def attempt() -> None:
            if sent[0]:
                bar.update(-sent[0])
                sent[0] = 0
            nonlocal local
            if not still_same(local):
                raise SourceChanged(f"{local.key}: changed since it was hashed", "re-run to pick up the new content")
            local = hashed(local, self.backend.cache)    # a new file: hashed here, while others upload
            self.backend.upload(local, action.key, progress)
            # The store verified what it received; make sure that is still what we hashed.
            if not still_same(local):
                raise SourceChanged(f"{local.key}: changed while it was being uploaded",
                                    "re-run when the file is complete")

        def on_retry(exc: BaseException) -> None:
            outcome.retries += 1
            log.info("retrying %s after: %s", action.key, describe_error(exc))

        try:
            self.policy.call(attempt, on_retry)
        except Exception as exc:  # noqa: BLE001 — every failure is reported per file, the others go on
            outcome.error = _without_key(describe_error(exc), action.key, local.key)
            log.debug("upload of %s failed", action.key, exc_info=True)
            return outcome
        outcome.ok, outcome.bytes_sent = True, local.size
        log.info("%s %s (%s)", action.kind.value, action.key, human_size(local.size))
        return outcome

    def _delete(self, action: Action) -> Outcome:
        assert action.remote is not None
        outcome = Outcome(action, ok=False)

        def on_retry(exc: BaseException) -> None:
            outcome.retries += 1

        try:
            self.policy.call(lambda: self.backend.delete(action.remote), on_retry)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            outcome.error = _without_key(describe_error(exc), action.key)
            return outcome
        outcome.ok = True
        log.info("delete %s", action.key)
        return outcome
