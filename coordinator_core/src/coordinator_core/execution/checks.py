"""The pipeline's checks at both ends of an execution: the request before it runs, the
engine's result after, and the deadline an execution gets when it enters the ledger.

Each check refuses with a typed ``CoordinatorError`` naming what was wrong, so the pipeline
turns it into ``result.error`` like any other stage failure.
"""

from __future__ import annotations

import time
from typing import Any

from coordinator_core.plugin_host.config import CoreSettings
from coordinator_hookspecs import (
    ERROR_OF_KIND,
    CoordinatorError,
    Effect,
    EngineError,
    EngineResult,
    ErrorKind,
    ExecutionRequest,
    InvalidRequest,
)


class RequestChecks:
    """``validateParameters`` of SPEC.md and the deadline, over the configured defaults."""

    __slots__ = ("_default_fee_limit", "_default_timeout", "_max_timeout")

    def __init__(self, settings: CoreSettings) -> None:
        self._default_fee_limit = settings.default_fee_limit
        self._default_timeout = settings.default_timeout
        self._max_timeout = settings.max_execution_timeout

    def deadline(self, request: ExecutionRequest) -> float:
        """Absolute monotonic deadline: the request's timeout capped by the configured max."""
        timeout = request.timeout
        if timeout is None:
            timeout = self._default_timeout
        elif not isinstance(timeout, (int, float)) or timeout != timeout or timeout <= 0:
            timeout = 0.0  # refused in validation; the entry still needs a deadline
        return time.monotonic() + min(timeout, self._max_timeout)

    def validate(self, request: ExecutionRequest, nested: bool) -> int:
        """The shape of the request; returns the fee limit it runs with."""
        if not isinstance(request, ExecutionRequest):
            raise InvalidRequest(f"expected an ExecutionRequest, got {type(request).__name__}")
        if not nested and (
            request.parent_id is not None or request.parent_resource_id is not None or request.depth
        ):
            # Nested calls pass quota through on their parent's lease: a caller must not be
            # able to claim to be one.
            raise InvalidRequest(
                "parent_id and depth are set by the coordinator for nested executions only"
            )
        if not isinstance(request.caller, str) or not request.caller:
            raise InvalidRequest(f"caller must be a non-empty string, got {request.caller!r}")
        timeout = request.timeout
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or not timeout > 0 or isinstance(timeout, bool)
        ):
            raise InvalidRequest(f"timeout must be a positive number of seconds, got {timeout!r}")
        if request.entry is not None and not isinstance(request.entry, str):
            raise InvalidRequest(f"entry must be a string, got {request.entry!r}")
        if type(request.depth) is not int or request.depth < 0:
            raise InvalidRequest(f"depth must be a non-negative integer, got {request.depth!r}")
        fee_limit = request.fee_limit
        if fee_limit is None:
            return self._default_fee_limit
        if type(fee_limit) is not int or fee_limit <= 0:
            raise InvalidRequest(f"fee_limit must be a positive integer, got {fee_limit!r}")
        return fee_limit


def checked(outcome: Any, engine: str) -> tuple[Any, int, tuple[Effect, ...]]:
    """The engine's result as (output, fee used, effects), refused as ``engine_error`` when
    malformed: a bad fee or effect would otherwise fail later, in the commit, where nothing
    can report it cleanly."""
    if not isinstance(outcome, EngineResult):
        raise EngineError(
            f"engine {engine} returned {type(outcome).__name__}, not an EngineResult", source=engine
        )
    fee = outcome.fee_used
    if type(fee) is not int or fee < 0:
        raise EngineError(
            f"engine {engine} reported fee_used {fee!r}, not a non-negative integer", source=engine
        )
    effects = tuple(outcome.effects)
    for effect in effects:
        if not (
            type(effect) is Effect
            and type(effect.kind) is str
            and type(effect.resource_id) is str
            and type(effect.key) is bytes
            and type(effect.value) is bytes
        ):
            raise EngineError(
                f"engine {engine} returned a malformed effect {effect!r} "
                "(kind and resource_id str, key and value bytes)",
                source=engine,
            )
    return outcome.output, fee, effects


def stopped(reason: ErrorKind, when: str, fee_used: int = 0) -> CoordinatorError:
    """The error of an execution whose token was cancelled or whose deadline passed."""
    cls = ERROR_OF_KIND.get(reason, EngineError)
    text = "cancelled" if reason is ErrorKind.CANCELLED else "deadline passed"
    return cls(f"{text} {when}", fee_used=fee_used)
