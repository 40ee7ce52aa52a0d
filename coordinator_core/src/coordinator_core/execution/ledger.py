"""The execution ledger: every request gets an id at entry; status and cancel work on it.

Active executions (queued or running) live in ``active``; a finished one leaves its outcome
(what ``status`` reports) in a bounded ``finished`` map (``[coordinator] ledger_retention``)
and, beyond it, is found in the durable audit log. A state change of an entry (queued ->
running, queued -> cancelled) happens under one short lock, so a queued execution is either
run by a worker or finished by ``cancel``, never both.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future

from coordinator_hookspecs import CancelToken, ExecutionRequest, ExecutionResult, Status


class Entry:
    """One execution's live record."""

    __slots__ = ("execution_id", "future", "request", "result", "status", "token")

    def __init__(
        self, execution_id: str, request: ExecutionRequest, token: CancelToken, status: Status
    ) -> None:
        self.execution_id = execution_id
        self.request = request
        self.token = token
        self.status = status
        self.result: ExecutionResult | None = None
        self.future: Future[ExecutionResult] | None = None


#: What the ledger keeps of a finished execution: ``ExecutionStatus``'s fields after the id
#: (status, resource_id, caller, error_kind, message, fee_used, duration).
Outcome = tuple[Status, str, str, "str | None", "str | None", int, float]


class Ledger:
    """Thread-safe map of execution id -> entry."""

    def __init__(self, retention: int = 10_000) -> None:
        self.retention = retention
        # ids unique across processes sharing one data dir: a random prefix per ledger
        self._prefix = "ex-" + os.urandom(5).hex() + "-"
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.active: dict[str, Entry] = {}
        #: (deadline, order, execution id) of every entry opened, earliest first: the
        #: watchdog looks only at its front (ids, not entries: a finished execution's result
        #: is not kept alive until its deadline)
        self.deadlines: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self.finished: OrderedDict[str, Outcome] = OrderedDict()

    def open(self, request: ExecutionRequest, deadline: float, status: Status,
             execution_id: str | None = None) -> Entry:
        """Register a new execution (``running`` for inline calls, ``queued`` for submit);
        a worker process opens the one its coordinator numbered under that ``execution_id``."""
        entry = Entry(
            execution_id or f"{self._prefix}{next(self._counter):08d}", request,
            CancelToken(deadline), status
        )
        # heappush is one C call under the GIL: safe beside the watchdog's heappop
        heapq.heappush(self.deadlines, (deadline, next(self._order), entry.execution_id))
        self.active[entry.execution_id] = entry
        return entry

    def claim(self, entry: Entry) -> bool:
        """queued -> running, unless cancel got there first."""
        with self._lock:
            if entry.status is not Status.QUEUED:
                return False
            entry.status = Status.RUNNING
            return True

    def claim_unstarted(self, entry: Entry) -> bool:
        """queued -> finished without running (its token was cancelled or timed out; the
        claimer runs it through the pipeline, which records why); False if it already runs."""
        with self._lock:
            if entry.status is not Status.QUEUED:
                return False
            entry.status = Status.CANCELLED
            return True

    def close(self, entry: Entry, result: ExecutionResult) -> None:
        """Record the final result and keep the execution's outcome in the bounded finished
        map. Only the outcome is kept, not the entry with its request, token and output:
        what is dropped ``retention`` executions later is then one small tuple, not a dozen
        objects long gone cold, and outputs (a model's can be large) are not held."""
        entry.result = result
        entry.status = result.status
        outcome = _outcome(result)
        with self._lock:  # finished first, then out of active: never briefly in neither
            self.finished[entry.execution_id] = outcome
            while len(self.finished) > self.retention:
                self.finished.popitem(last=False)
        self.active.pop(entry.execution_id, None)
        future = entry.future
        if future is not None and future.set_running_or_notify_cancel():
            future.set_result(result)

    def drop(self, entry: Entry, result: ExecutionResult | None) -> None:
        """End a dry run's entry (a query or simulation): out of ``active`` without a kept
        outcome, so dry runs neither show in ``status`` nor push real executions out of
        ``retention``."""
        if result is not None:
            entry.result = result
            entry.status = result.status
        self.active.pop(entry.execution_id, None)
        future = entry.future
        if result is not None and future is not None and future.set_running_or_notify_cancel():
            future.set_result(result)

    def amend(self, entry: Entry, result: ExecutionResult) -> None:
        """Replace the result of a closed execution (a nested one discarded with its
        parent after it finished): its entry and its kept outcome both say so."""
        entry.result = result
        entry.status = result.status
        with self._lock:
            if entry.execution_id in self.finished:
                self.finished[entry.execution_id] = _outcome(result)

    def get(self, execution_id: str) -> Entry | None:
        """The entry of a queued or running execution."""
        return self.active.get(execution_id)

    def outcome(self, execution_id: str) -> Outcome | None:
        """The outcome of a finished execution still within ``retention``."""
        # ``close`` adds to ``finished`` before it drops from ``active``: looking in the
        # opposite order, an execution finishing right now is found in one or the other.
        entry = self.active.get(execution_id)
        if entry is not None and entry.result is not None:
            return _outcome(entry.result)
        return self.finished.get(execution_id)

    def running(self) -> list[Entry]:
        """A snapshot of the active entries (the watchdog scans it)."""
        return list(self.active.values())


def _outcome(result: ExecutionResult) -> Outcome:
    error = result.error
    return (result.status, result.resource_id, result.caller,
            error.kind.value if error is not None else None,
            error.message if error is not None else None, result.fee_used, result.duration)
