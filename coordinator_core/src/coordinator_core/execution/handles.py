"""What callers hold on to: the handle of a submitted execution and a status report."""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

import attrs

from coordinator_hookspecs import ExecutionResult, Status

if TYPE_CHECKING:

    class _Canceller(Protocol):
        def cancel(self, execution_id: str) -> bool: ...


class ExecutionHandle:
    """What ``submit`` returns: the execution id at once, the result when it is ready."""

    __slots__ = ("_coordinator", "_future", "execution_id")

    def __init__(
        self, coordinator: _Canceller, execution_id: str, future: Future[ExecutionResult]
    ) -> None:
        self._coordinator = coordinator
        self.execution_id = execution_id
        self._future = future

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Block until the execution ends (``TimeoutError`` if ``timeout`` passes first)."""
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> bool:
        return self._coordinator.cancel(self.execution_id)

    @property
    def future(self) -> Future[ExecutionResult]:
        return self._future


@attrs.frozen
class ExecutionStatus:
    """``status(id)``: where an execution is, live from the ledger or from the durable log."""

    execution_id: str
    status: Status
    resource_id: str | None = None
    caller: str | None = None
    error_kind: str | None = None
    message: str | None = None
    fee_used: int = 0
    duration: float = 0.0
    source: str = "ledger"
