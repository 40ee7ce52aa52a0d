"""The epoch ticker: bumps the engine's epoch while executions are in flight.

Python signals cannot interrupt wasm, so deadlines and cancellation ride on wasmtime's epoch
interruption: every ``tick`` seconds the engine epoch advances, each running store's epoch
deadline callback fires, polls its execution's ``CancelToken`` and either traps or extends its
deadline by one tick. The thread sleeps on an event while nothing runs, so an idle coordinator
costs nothing.
"""

from __future__ import annotations

import threading
import time

from coordinator_engine_wasmtime import _capi

#: Ticks without any execution in flight before the thread goes to sleep.
IDLE_TICKS = 20


class EpochTicker:
    """Counts executions in flight and ticks the engine epoch while there are any."""

    def __init__(self, engine: int, tick: float) -> None:
        self._engine = engine
        self._tick = tick
        self._inflight = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._idle = True
        self._thread: threading.Thread | None = None

    def enter(self) -> None:
        """An execution starts (call ``leave`` when it ends, on every path)."""
        with self._lock:
            self._inflight += 1
            if self._idle:  # only the first execution after a quiet spell pays for a wake-up
                self._idle = False
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="wasmtime-epoch",
                                                    daemon=True)
                    self._thread.start()
                self._wake.set()

    def leave(self) -> None:
        with self._lock:
            self._inflight -= 1

    def kick(self, _reason: object = None) -> None:
        """Advance the epoch now (a ``CancelToken.on_cancel`` callback: a cancel is then seen
        by the running guest at once instead of at the next tick)."""
        if not self._closed:
            _capi.increment_epoch(self._engine)

    def _run(self) -> None:
        quiet = 0
        while True:
            self._wake.wait()
            if self._closed:
                return
            time.sleep(self._tick)
            if self._closed:
                return
            _capi.increment_epoch(self._engine)
            with self._lock:
                quiet = quiet + 1 if self._inflight == 0 else 0
                if quiet >= IDLE_TICKS:  # go to sleep after a quiet spell, not at every gap
                    quiet = 0
                    self._idle = True
                    self._wake.clear()

    @property
    def alive(self) -> bool:
        return not self._closed and (self._thread is None or self._thread.is_alive())

    def close(self) -> None:
        """Stop the thread (the engine it ticks is freed after this returns)."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
