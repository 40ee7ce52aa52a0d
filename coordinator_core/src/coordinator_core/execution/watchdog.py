"""The deadline watchdog: one daemon thread that times out overdue executions.

Engines that can poll (wasm's epoch callback) check the deadline themselves; engines that
cannot (onnxruntime's ``RunOptions.terminate``) rely on a cancellation callback. Rather than
arm a timer per execution (a cost on every call), one thread looks every few milliseconds
at the front of the ledger's deadline heap and cancels the tokens whose deadline has passed
with reason ``timeout``, which fires the engines' callbacks; thousands of executions in
flight cost it nothing until their deadlines come. A queued execution whose deadline passed is
finished at once (``finish_queued``), not when a worker frees up.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

from coordinator_core.execution.ledger import Entry, Ledger
from coordinator_core.log import logger
from coordinator_hookspecs import ErrorKind, Status


class Watchdog:
    """Scans ``ledger`` every ``period`` seconds while executions are active."""

    def __init__(self, ledger: Ledger, finish_queued: Callable[[Entry], object],
                 period: float = 0.005, idle_period: float = 0.02) -> None:
        self._ledger = ledger
        self._finish_queued = finish_queued
        self._period = period
        self._idle_period = idle_period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coordinator-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        ledger, clock, heappop = self._ledger, time.monotonic, heapq.heappop
        deadlines, active = ledger.deadlines, ledger.active
        while not self._stop.is_set():
            now = clock()
            while deadlines and deadlines[0][0] <= now:
                entry = active.get(heappop(deadlines)[2])
                if entry is None or entry.token.reason is not None or entry.status.final:
                    continue  # finished or cancelled already
                token = entry.token
                try:
                    token.cancel(ErrorKind.TIMEOUT)
                    if entry.status is Status.QUEUED:
                        self._finish_queued(entry)
                except Exception as exc:  # the watchdog must outlive any one execution
                    logger.opt(exception=exc).error(
                        "watchdog: timing out {} failed", entry.execution_id)
            self._stop.wait(self._period if ledger.active else self._idle_period)
