"""The dynamic batcher of one model: a queue of requests and the threads that form batches.

A calling thread (the execution's own) checks its request, then :meth:`Batcher.put` queues it
and waits for its result. One runner thread per model instance takes batches off the queue:
the oldest request opens a batch; requests that *fit* it (the same shapes past the batch
axis, hence the same dtypes, as the signature already fixed those) join in arrival order up
to ``max_batch_size`` rows. The runner waits for more until the rows reach a preferred size,
pass the largest one, or reach the maximum, or until the oldest request has waited
``max_queue_delay_us``; then it cuts the batch to the longest run of requests whose rows are
a preferred size (if any) and runs it. A request that does
not fit stays queued and opens a later batch of its own kind.

Leaving the queue: a cancel or deadline of a queued request (its ``CancelToken``), and the
caller's ``queue_timeout_us``, withdraw it, and only it; a request already taken into a
running batch stays there (its result is then discarded by the caller, as for a run that
ends after its deadline). When every request of a running batch was cancelled, the batch's
``RunOptions.terminate`` is set. The queue is bounded by ``max_queue_size``: a request over
it is refused at once (``QuotaExceeded``), before it waits at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import onnxruntime as ort

from coordinator_engine_onnxruntime.options import ServingOptions
from coordinator_hookspecs import EngineError, ErrorKind, QuotaExceeded


class Pending:
    """One queued request and, once done, its outputs (or error) and fee."""

    __slots__ = ("_gate", "batch", "elements", "enqueued", "error", "fee", "feeds",
                 "finished", "key", "outputs", "rows", "started", "token")

    def __init__(self, feeds: dict[str, Any], rows: int, key: tuple[Any, ...], elements: int,
                 token: Any) -> None:
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.elements = elements
        self.token = token
        self.enqueued = time.perf_counter()
        self.started = 0.0
        # A plain lock held until the result is in: cheaper to wait on and to release than
        # an Event (a Condition and a fresh lock per wait), and this is paid per request.
        self._gate = threading.Lock()
        self._gate.acquire()
        self.finished = False
        self.batch: BatchRun | None = None
        self.outputs: list[Any] | None = None
        self.error: BaseException | None = None
        self.fee = 0

    def finish(self, outputs: list[Any] | None, fee: int,
               error: BaseException | None = None) -> None:
        if self.finished:
            return
        self.outputs, self.fee, self.error = outputs, fee, error
        self.finished = True
        self._gate.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until finished (at most ``timeout`` seconds); False if it is not yet."""
        if self.finished:
            return True
        if self._gate.acquire(timeout=-1 if timeout is None else timeout):
            self._gate.release()  # a later wait returns at once too
            return True
        return False


class BatchRun:
    """A batch being run: its members still wanting a result and its ``RunOptions``."""

    __slots__ = ("items", "live", "options")

    def __init__(self, items: list[Pending]) -> None:
        self.items = items
        self.live = len(items)
        self.options = ort.RunOptions()


#: ``run(instance, batch)`` finishes every member of the batch (the serving layer).
Runner = Callable[[Any, BatchRun], None]


class Batcher:
    """Queue and runner threads of one model (see the module docstring)."""

    def __init__(self, options: ServingOptions, instances: list[Any], run: Runner,
                 label: str) -> None:
        self.max_rows = options.max_batch_size
        self.preferred = options.preferred_batch_sizes
        self.delay = options.max_queue_delay_us / 1e6
        self.limit = options.max_queue_size
        self._run = run
        self._queue: list[Pending] = []
        self._rows = 0  # rows queued, every kind together
        self._wake_rows = min(self.preferred or (self.max_rows,))
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, args=(instance,), daemon=True,
                             name=f"onnx-batcher-{label}-{n}")
            for n, instance in enumerate(instances)
        ]
        for thread in self._threads:
            thread.start()

    # -- callers -----------------------------------------------------------------------------
    def put(self, item: Pending) -> None:
        """Queue ``item``; ``QuotaExceeded`` at once when the queue is full."""
        with self._cond:
            if self._closed:
                raise EngineError("the model's batcher is closed")
            if self.limit and len(self._queue) >= self.limit:
                raise QuotaExceeded(
                    f"the model's batch queue is full ({len(self._queue)} requests queued, "
                    f"max_queue_size {self.limit})")
            self._queue.append(item)
            self._rows += item.rows
            # Wake a runner only when it has something new to decide: a first request to
            # time, or enough rows for a full (or preferred) batch. Waking it for every
            # request costs a GIL hand-off each, for nothing; the delay wakes it anyway.
            if len(self._queue) == 1 or self._rows >= self._wake_rows:
                self._cond.notify()

    def withdraw(self, item: Pending) -> bool:
        """Take ``item`` out of the queue; False when it was already taken into a batch."""
        with self._cond:
            try:
                self._queue.remove(item)
            except ValueError:
                return False
            self._rows -= item.rows
            return True

    def on_cancel(self, item: Pending, stopped: Callable[[ErrorKind], BaseException]
                  ) -> Callable[[ErrorKind], None]:
        """The token callback of a queued ``item``: withdraw it and fail it with
        ``stopped(reason)``, or, once it runs, count it out of its batch."""

        def callback(reason: ErrorKind) -> None:
            with self._cond:
                if item in self._queue:
                    self._queue.remove(item)
                    self._rows -= item.rows
                    queued = True
                else:
                    queued = False
                    batch = item.batch
                    if batch is not None:
                        batch.live -= 1
                        if batch.live <= 0:
                            batch.options.terminate = True
            if queued:
                item.finish(None, 0, stopped(reason))

        return callback

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self) -> None:
        """Stop the runners; requests still queued fail as ``engine_error``."""
        with self._cond:
            self._closed = True
            left, self._queue, self._rows = self._queue, [], 0
            self._cond.notify_all()
        for item in left:
            item.finish(None, 0, EngineError("the model's batcher closed while the request "
                                             "was queued"))

    # -- runner threads ------------------------------------------------------------------------
    def _fitting(self) -> tuple[list[Pending], int]:
        """The requests fitting the oldest one, in order, up to ``max_rows`` rows."""
        first = self._queue[0]
        batch, rows = [], 0
        for item in self._queue:
            if item.key == first.key and rows + item.rows <= self.max_rows:
                batch.append(item)
                rows += item.rows
                if rows == self.max_rows:
                    break
        return batch, rows

    def _ready(self, rows: int) -> bool:
        """Run now: the rows are full, a preferred size, or past the largest preferred size
        (waiting cannot make a better cut)."""
        if rows >= self.max_rows:
            return True
        return bool(self.preferred) and (rows in self.preferred or rows >= self.preferred[-1])

    def _cut(self, batch: list[Pending]) -> list[Pending]:
        """The longest prefix whose rows are a preferred size; all of it if none is."""
        if not self.preferred:
            return batch
        best, rows = 0, 0
        for n, item in enumerate(batch, 1):
            rows += item.rows
            if rows in self.preferred:
                best = n
        return batch[:best] if best else batch

    def _take(self) -> list[Pending] | None:
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                batch, rows = self._fitting()
                wait = self._queue[0].enqueued + self.delay - time.perf_counter()
                if self._ready(rows) or wait <= 0:
                    batch = self._cut(batch)
                    now = time.perf_counter()
                    run = BatchRun(batch)
                    for item in batch:
                        self._queue.remove(item)
                        self._rows -= item.rows
                        item.batch = run
                        item.started = now
                    return batch
                self._cond.wait(wait)

    def _loop(self, instance: Any) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            run = batch[0].batch
            assert run is not None
            try:
                self._run(instance, run)
            except BaseException as exc:  # the serving layer finishes items; never leave one
                for item in batch:
                    if not item.finished:
                        item.finish(None, 0, exc)
