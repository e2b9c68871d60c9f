"""The lock object under an S3 target's prefix (see locks.py), written with If-None-Match / If-Match.

Conditional writes are AWS's since November 2024: `PutObject` with `If-None-Match: *` creates the lock only
where none exists, `If-Match: "<ETag>"` replaces or deletes only the lock this run holds. Stores without
them answer 400/501: `NoConditionalWrite`, and the run falls back to the machine lock.

The requests go out through the signed connection of sigv4.py where it applies, so that a no-op apply (lock,
list, unlock) never starts botocore (~0.6 CPU-s); any answer that path does not expect is asked again through
botocore, whose answer decides (as the listing does).
"""
from __future__ import annotations

import logging
from typing import Any

from ...errors import AuthError, NoConditionalWrite, RemoteError
from .compat import error_fields
from .sigv4 import Answer, Connection, Endpoint, error_code

log = logging.getLogger(__name__)
_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict")
_UNSUPPORTED = ("NotImplemented", "InvalidArgument", "InvalidRequest")


class _Unexpected(Exception):
    """An answer the signed path does not read as botocore would: ask botocore."""


class S3LockStore:
    """create / read / replace / remove the lock object `key` (the LockStore protocol of locks.py)."""

    def __init__(self, backend: Any, key: str, endpoint: Endpoint | None) -> None:
        self.backend = backend
        self.key = key
        self.where = f"s3://{backend.bucket}/{key}"
        self._endpoint = endpoint

    # ---- the signed path ---------------------------------------------------------------------------

    def _wire(self, method: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Answer | None:
        """The answer through sigv4, or None where botocore must be asked. One connection per call: the
        lock is touched a few times per run, minutes apart, and a kept-alive connection would have gone stale."""
        if self._endpoint is None:
            return None
        conn = Connection(self._endpoint, user_agent="cartsync-lock")
        try:
            answer = conn.request(method, self.key, {}, headers, body)
        finally:
            conn.close()
        code = error_code(answer.body) if answer.status >= 300 else ""
        if answer.status == 404 and code == "NoSuchBucket":
            raise RemoteError(f"bucket {self.backend.bucket!r} does not exist",
                              "create it first, or fix the bucket name in the url")
        if answer.status == 403 and code in ("AccessDenied", "AllAccessDisabled", "AccountProblem"):
            raise AuthError("access denied")
        if answer.status >= 500 and code not in _UNSUPPORTED or answer.status in (408, 429) \
                or code in ("SlowDown", "RequestTimeout"):
            raise RemoteError(f"lock {method} answered HTTP {answer.status} {code}".rstrip(), retryable=True,
                              status=answer.status)
        if answer.status < 300 or answer.status in (404, 409, 412) or code in _UNSUPPORTED + _CONFLICT:
            return answer
        log.debug("lock %s through botocore instead (HTTP %s %s)", method, answer.status, code)
        self._endpoint = None
        return None

    # ---- the protocol ------------------------------------------------------------------------------

    def _put(self, body: bytes, cond: dict[str, str]) -> str | None:
        answer = self._wire("PUT", {"content-type": "application/json", **cond}, body)
        if answer is not None:
            code = error_code(answer.body) if answer.status >= 300 else ""
            if answer.status < 300:
                return answer.headers.get("etag", "").strip('"')
            if answer.status in (404, 409, 412) or code in _CONFLICT:
                return None                                  # taken, or an If-Match on a lock removed meanwhile
            raise NoConditionalWrite(code or str(answer.status))
        name = "IfNoneMatch" if "if-none-match" in cond else "IfMatch"
        try:
            resp = self.backend.call("put_object", Bucket=self.backend.bucket, Key=self.key, Body=body,
                                     ContentType="application/json", **{name: next(iter(cond.values()))})
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise                                        # the listing says so, by name
            return None                                      # If-Match on a lock removed meanwhile
        except Exception as exc:
            code, status, _ = error_fields(exc)
            if status in (412, 409) or code in _CONFLICT:
                return None
            if status in (400, 501) or code in _UNSUPPORTED:
                raise NoConditionalWrite(code or str(status)) from exc
            raise
        return str(resp.get("ETag", "")).strip('"')

    def create(self, body: bytes) -> str | None:
        return self._put(body, {"if-none-match": "*"})

    def replace(self, body: bytes, token: str) -> str | None:
        return self._put(body, {"if-match": f'"{token}"'})

    def read(self) -> tuple[bytes, str] | None:
        answer = self._wire("GET")
        if answer is not None:
            if answer.status == 404:
                return None
            if answer.status >= 300:
                raise RemoteError(f"reading the lock at {self.where} answered HTTP {answer.status}")
            return answer.body, answer.headers.get("etag", "").strip('"')
        try:
            resp = self.backend.call("get_object", Bucket=self.backend.bucket, Key=self.key)
        except FileNotFoundError:
            return None
        return resp["Body"].read(), str(resp.get("ETag", "")).strip('"')

    def remove(self, token: str | None) -> None:
        cond = {"if-match": f'"{token}"'} if token is not None else {}
        answer = self._wire("DELETE", cond)
        if answer is not None:
            code = error_code(answer.body) if answer.status >= 300 else ""
            if answer.status < 300 or answer.status in (404, 412) or code == "PreconditionFailed":
                return                                       # gone, or someone else's now: leave it
            if not cond:
                raise RemoteError(f"removing the lock at {self.where} answered HTTP {answer.status} {code}".rstrip())
            self._remove_unconditionally(token)
            return
        try:
            self.backend.call("delete_object", Bucket=self.backend.bucket, Key=self.key,
                              **({"IfMatch": cond["if-match"]} if cond else {}))
        except FileNotFoundError:
            return                                           # gone already
        except Exception as exc:
            code, status, _ = error_fields(exc)
            if status == 412 or code == "PreconditionFailed":
                return                                       # someone else's now: leave it
            if not cond or not (status in (400, 501) or code in ("NotImplemented", "InvalidArgument")):
                raise
            self._remove_unconditionally(token)

    def _remove_unconditionally(self, token: str | None) -> None:
        """A store without conditional deletes: compare, then delete (a small race, at the end of a run)."""
        current = self.read()
        if current is None or current[1] != token:
            return
        answer = self._wire("DELETE")
        if answer is None:
            self.backend.call("delete_object", Bucket=self.backend.bucket, Key=self.key)
        elif answer.status >= 300 and answer.status != 404:
            raise RemoteError(f"removing the lock at {self.where} answered HTTP {answer.status}")
