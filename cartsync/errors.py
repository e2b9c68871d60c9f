"""One error base; the CLI is the only place where errors become text and exit codes."""
from __future__ import annotations


class CartsyncError(Exception):
    """An error the user can act on: a message, and a hint on how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ManifestError(CartsyncError):
    """The manifest (or the source it points to) is invalid; carries every problem found."""

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        self.problems = problems
        head = "invalid manifest" if len(problems) == 1 else f"invalid manifest ({len(problems)} problems)"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems), hint)


class SourceError(CartsyncError):
    """The source folder, catalog or a selected file is unusable."""


class PlanError(CartsyncError):
    """The plan cannot be made (e.g. a target limit would be exceeded); nothing was sent."""


class RemoteError(CartsyncError):
    """A remote store refused or failed a request."""

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool = False,
                 status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, hint)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class AuthError(RemoteError):
    """Credentials missing, wrong or without permission; never retried."""


class VerifyError(RemoteError):
    """An upload's server-side checksum or size differs from the local file; retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class NoConditionalWrite(CartsyncError):
    """The store refused or ignored a conditional write (If-None-Match / If-Match): no lock object there."""


class SourceChanged(CartsyncError):
    """A local file changed between hashing and upload; not retried within this run."""


class LockedError(CartsyncError):
    """Another cartsync run holds the lock for this manifest and target."""
