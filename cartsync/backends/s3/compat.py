"""What an S3-compatible store's refusals mean: a call it lacks, or a feature of a request it rejects.

MinIO, Ceph RGW, R2, Backblaze B2, Wasabi and GCS's XML API each leave out or change something. Two
kinds of answer matter to cartsync:

- *the call is not there* (`NotImplemented`, `501`, `MethodNotAllowed`, `405`): an optional step
  (clean-up, resume, an extra read) is skipped with a one-line note; such an answer never clears, so
  it is not retried (retry.py);
- *a feature of the request is refused* (an ACL on a bucket with ACLs disabled, a storage class the
  store lacks, a checksum header it does not implement): every file would fail the same way, so the
  target stops at the first, with one message that names the setting and the fix (`FeatureRejected`).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ...errors import RemoteError

log = logging.getLogger(__name__)
T = TypeVar("T")

_UNSUPPORTED_CODES = {"NotImplemented", "MethodNotAllowed", "XNotImplemented", "UnsupportedOperation"}


class FeatureRejected(RemoteError):
    """The store refuses a feature every upload of this target uses: the target stops (executor)."""

    stops_target = True
    repeat = False

    def __init__(self, problem: str, fix: str) -> None:
        # the report prints the message alone: it carries the fix too
        super().__init__(f"{problem}; {fix}", fix)
        self.problem = problem

    def repeated(self) -> FeatureRejected:
        """The same refusal met by another file: the executor skips that file instead of reporting it again."""
        again = FeatureRejected(self.problem, self.hint or "")
        again.repeat = True
        return again


def _client_error(exc: BaseException) -> Any:
    """botocore's ClientError behind exc (s3fs and cartsync's translation wrap it), or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(getattr(seen, "response", None), dict):
            return seen
        seen = seen.__cause__
    return None


def error_fields(exc: BaseException) -> tuple[str, int, dict[str, Any]]:
    """(code, HTTP status, the Error element's fields) of an S3 error answer; ("", 0, {}) for others."""
    err = _client_error(exc)
    if err is None:
        return "", 0, {}
    fields = dict(err.response.get("Error", {}))
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return str(fields.get("Code", "")), status, fields


def unsupported(exc: BaseException) -> bool:
    """True if the store says it lacks the call (never clears: skip it, do not retry)."""
    code, status, _ = error_fields(exc)
    return code in _UNSUPPORTED_CODES or status in (501, 405)


def describe(exc: BaseException) -> str:
    code, status, fields = error_fields(exc)
    if code or status:
        return f"{code or status}: {fields.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def feature_rejected(target: str, exc: BaseException, args: Mapping[str, Any]) -> FeatureRejected | None:
    """The one message for a store that refuses a feature this upload used (`args`: its extra arguments
    from the manifest's `headers:`), or None if the refusal is not about a feature."""
    code, status, fields = error_fields(exc)
    header = str(fields.get("Header") or fields.get("ArgumentName") or "").lower()
    message = str(fields.get("Message", ""))
    if code == "AccessControlListNotSupported" or (code in ("InvalidArgument", "InvalidRequest", "NotImplemented")
                                                    and ("acl" in header or "ACL" in message) and "ACL" in args):
        return FeatureRejected(
            f"target {target}: the bucket has ACLs disabled (Object Ownership: bucket owner enforced) and refuses "
            f"ACL {args.get('ACL', '')!r} from headers:",
            "remove ACL from the target's headers: and grant access with a bucket policy instead")
    if code == "InvalidStorageClass" or ("storage-class" in header and "StorageClass" in args):
        return FeatureRejected(
            f"target {target}: the store does not accept StorageClass {args.get('StorageClass', '')!r} from headers:",
            "remove StorageClass from the target's headers:, or use a class this store offers")
    checksum = [k for k in args if k.startswith("Checksum")]
    if (code in _UNSUPPORTED_CODES or status == 501 or code in ("InvalidArgument", "InvalidRequest")) and (
            "checksum" in header or "checksum" in message.lower()):
        if checksum:
            return FeatureRejected(
                f"target {target}: the store does not support the checksum header(s) {', '.join(checksum)} "
                "from headers:", f"remove {', '.join(checksum)} from the target's headers:")
        return FeatureRejected(
            f"target {target}: the store refuses the checksum header {header or 'x-amz-checksum-*'} sent with "
            "each upload", "set storage_options.config_kwargs.request_checksum_calculation: when_required")
    if code in _UNSUPPORTED_CODES or status == 501:
        return FeatureRejected(
            f"target {target}: the store does not implement a feature of the upload request"
            + (f" (header {header})" if header else "") + f": {message or code}",
            "remove the matching setting from the target's headers: or storage_options")
    return None


class OptionalSteps:
    """Runs a target's optional steps (clean-up, resume, an extra read): a store that lacks the call is noted
    once and not asked again this run; any other failure is noted once per step; neither blocks the sync."""

    def __init__(self, target_name: str) -> None:
        self.target_name = target_name
        self._lock = threading.Lock()
        self._noted: set[str] = set()
        self._unsupported: set[str] = set()      # it never clears (501, 405)

    def run(self, step: str, fn: Callable[[], T], default: T) -> T | None:
        """fn()'s result, or `default` when the step is skipped or fails."""
        if step in self._unsupported:
            return default
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 — optional steps never block the sync
            if unsupported(exc):
                with self._lock:
                    self._unsupported.add(step)
                self._note_once(step, f"target {self.target_name}: the store does not support {step}; skipped")
            else:
                self._note_once(step, f"target {self.target_name}: {step} failed, skipped ({describe(exc)})")
            return default

    def _note_once(self, step: str, text: str) -> None:
        with self._lock:
            if step in self._noted:
                return
            self._noted.add(step)
        log.warning("%s", text)
