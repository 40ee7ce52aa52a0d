"""Typed error kinds: the stable strings of DESIGN.md §3.

Every failure the coordinator reports carries one of ten kinds. Plugins raise the matching
subclass of :class:`CoordinatorError`; the pipeline turns it into the result's ``error``
and chooses the final status from :data:`STATUS_OF_KIND`. Anything else a plugin raises is
reported as ``internal`` (a bug), never leaked as a bare exception to the caller.
"""

from __future__ import annotations

from typing import ClassVar

from coordinator_hookspecs.types import ErrorKind, Status

#: The final status each error kind ends in.
STATUS_OF_KIND: dict[ErrorKind, Status] = {
    ErrorKind.INVALID_REQUEST: Status.REJECTED,
    ErrorKind.NOT_FOUND: Status.REJECTED,
    ErrorKind.SECURITY_REJECTED: Status.REJECTED,
    ErrorKind.QUOTA_EXCEEDED: Status.REJECTED,
    ErrorKind.FEE_EXHAUSTED: Status.FAILED,
    ErrorKind.TIMEOUT: Status.TIMED_OUT,
    ErrorKind.CANCELLED: Status.CANCELLED,
    ErrorKind.TRAP: Status.FAILED,
    ErrorKind.ENGINE_ERROR: Status.FAILED,
    ErrorKind.INTERNAL: Status.FAILED,
}


class CoordinatorError(Exception):
    """Base of every typed failure.

    ``message`` names what was wrong; ``source`` names the plugin or stage that decided
    (a validator's name, a quota policy's name); ``fee_used`` is the fee consumed before the
    failure, so failed results still report it.
    """

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL

    def __init__(self, message: str, *, source: str | None = None, fee_used: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.fee_used = fee_used

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


class InvalidRequest(CoordinatorError):
    """The request, bytes, config or arguments are malformed."""

    kind = ErrorKind.INVALID_REQUEST


class NotFound(CoordinatorError):
    """An unknown resource or execution id."""

    kind = ErrorKind.NOT_FOUND


class SecurityRejected(CoordinatorError):
    """A security validator refused the deploy or the execution."""

    kind = ErrorKind.SECURITY_REJECTED


class QuotaExceeded(CoordinatorError):
    """A quota policy refused, or a bounded wait for quota ran out."""

    kind = ErrorKind.QUOTA_EXCEEDED


class FeeExhausted(CoordinatorError):
    """The execution ran out of its fee limit (fuel, for WASM)."""

    kind = ErrorKind.FEE_EXHAUSTED


class Timeout(CoordinatorError):
    """The execution passed its deadline."""

    kind = ErrorKind.TIMEOUT


class Cancelled(CoordinatorError):
    """The execution was cancelled by ``Coordinator.cancel``."""

    kind = ErrorKind.CANCELLED


class Trap(CoordinatorError):
    """The guest trapped: unreachable, stack overflow, out-of-bounds access, limit hit."""

    kind = ErrorKind.TRAP


class EngineError(CoordinatorError):
    """The engine failed for a reason that is not the guest's fault, or no engine fits."""

    kind = ErrorKind.ENGINE_ERROR


class InternalError(CoordinatorError):
    """A bug in the coordinator or a plugin; the message carries the original exception."""

    kind = ErrorKind.INTERNAL


ERROR_OF_KIND: dict[ErrorKind, type[CoordinatorError]] = {
    cls.kind: cls
    for cls in (
        InvalidRequest,
        NotFound,
        SecurityRejected,
        QuotaExceeded,
        FeeExhausted,
        Timeout,
        Cancelled,
        Trap,
        EngineError,
        InternalError,
    )
}


def portable_error(error: BaseException) -> CoordinatorError:
    """An exception safe to pickle into another process: a ``CoordinatorError`` rebuilt as
    the contract's class of its kind with its message, source and fee (a plugin's subclass
    may not unpickle on the other side), any other exception as an ``InternalError`` naming
    it. Worker processes and executor plugins send errors this way."""
    if isinstance(error, CoordinatorError):
        cls = ERROR_OF_KIND.get(error.kind, InternalError)
        return cls(error.message, source=error.source, fee_used=error.fee_used)
    return InternalError(f"{type(error).__name__}: {error}")
