"""The process-pool executor: engines in worker processes.

Measured on the 2-core machine: wasmtime and onnxruntime release the GIL, so executions of a
millisecond or more scale with threads, while short ones (tens of microseconds) get slower in
threads because of GIL contention. With ``[dispatch] executor = "processes"`` each selected
engine is replaced in the dispatcher by a ``PooledEngine`` (``engine.py``) that hands the
execution to one of ``processes`` worker processes. Workers hold their own engines and module
caches (``spec.py`` rebuilds them, ``worker.py`` serves them); the pipeline around
the engine — validation, security, quota, commit of effects and the audit record through the
one store, sinks — is unchanged and runs in the parent.

- Routing: a resource goes to an idle worker that already ran it (warm), else to its home
  worker by hash, else to any idle worker; when all are busy the caller waits, bounded by the
  execution's deadline.
- Cancel and timeout: the parent token's ``on_cancel`` forwards the reason to the worker on a
  side pipe; the worker cancels its own token. A worker that has not answered
  ``process_kill_grace`` seconds later is killed and replaced, and the execution ends with
  the cancel's kind (something threads can never do to a stuck engine).
- A worker that dies mid-execution ends that execution with ``engine_error`` and is replaced.
- ``ctx.invoke`` (nested executions) is not available in workers: a host function that needs
  it gets an ``EngineError`` saying so.
- Workers are started with the ``spawn`` method: forking a process that runs threads (the
  watchdog, the store's group commit, engine tickers) is unsafe.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
from typing import Any

from coordinator_core.engines.processes.spec import WorkerSpec
from coordinator_core.engines.processes.worker import worker_main
from coordinator_hookspecs import (
    ERROR_OF_KIND,
    CancelToken,
    CoordinatorError,
    EngineError,
    EngineResult,
    ErrorKind,
    ExecutionContext,
    InvalidRequest,
)


class _Worker:
    """The parent's handle of one worker process (used by one execution at a time)."""

    def __init__(self, slot: int, ctx: Any, spec: WorkerSpec) -> None:
        self.slot = slot
        self.conn, child = ctx.Pipe(duplex=True)
        child_cancels, self.cancels = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=worker_main, args=(spec, child, child_cancels),
                                   name=f"coordinator-engine-worker-{slot}", daemon=True)
        self.process.start()
        # Only the child may hold its ends: a dead worker must show up as EOF here.
        child.close()
        child_cancels.close()
        self.cancel_lock = threading.Lock()
        self.ready = False
        self.busy = False
        self.pid = self.process.pid
        self.executions = 0
        self.warm: set[str] = set()
        self.sent: dict[str, Any] = {}
        self.killed_for: str | None = None

    def await_ready(self, timeout: float, token: CancelToken | None = None) -> None:
        end = time.monotonic() + timeout
        while not self.conn.poll(0.05):
            if token is not None and token.poll() is not None:
                raise _stopped(token.poll() or ErrorKind.CANCELLED, "waiting for a worker")
            if time.monotonic() > end:
                self.process.kill()
                raise EngineError(f"worker process {self.pid} did not start within {timeout} s")
        try:
            msg = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(1.0)
            raise EngineError(f"worker process {self.pid} exited with code "
                              f"{self.process.exitcode} while loading plugins") from None
        if msg[0] != "ready":
            raise EngineError(f"worker process {self.pid} could not load its engines: {msg[1]}")
        self.ready = True

    def stop(self) -> None:
        try:
            self.conn.send(("stop",))
        except OSError:
            pass
        self.process.join(2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        self.conn.close()
        self.cancels.close()


class _Flight:
    """One execution on one worker: forwards a cancel, arms the kill-after-grace timer."""

    __slots__ = ("done", "eid", "pool", "worker")

    def __init__(self, pool: ProcessPool, worker: _Worker, eid: str) -> None:
        self.pool, self.worker, self.eid = pool, worker, eid
        self.done = False

    def forward(self, reason: ErrorKind) -> None:
        if self.done:
            return
        worker = self.worker
        with worker.cancel_lock:
            try:
                worker.cancels.send((self.eid, reason.value))
            except OSError:
                return
        timer = threading.Timer(self.pool.kill_grace, self._kill_if_stuck)
        timer.daemon = True
        timer.start()

    def _kill_if_stuck(self) -> None:
        if not self.done:
            self.worker.killed_for = self.eid
            self.worker.process.kill()


class ProcessPool:
    """``size`` worker processes serving the engines named in ``spec``."""

    def __init__(self, spec: WorkerSpec, size: int, *, kill_grace: float = 1.0,
                 start_timeout: float = 60.0) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._spec = spec
        self.kill_grace = kill_grace
        self.start_timeout = start_timeout
        self._cond = threading.Condition()
        self._workers: list[_Worker] = []
        try:
            for slot in range(size):
                self._workers.append(_Worker(slot, self._ctx, spec))
        except BaseException:  # a later worker failing to spawn must not orphan the earlier
            for worker in self._workers:
                worker.stop()
            raise
        self.restarts = 0
        self.closed = False
        #: why a worker last failed to start (reported once by ``health``)
        self.start_error: str | None = None

    def start(self) -> None:
        """Wait until every worker has loaded its engines (they start in parallel)."""
        for worker in self._workers:
            worker.await_ready(self.start_timeout)

    # -- choosing a worker -----------------------------------------------------------------
    def _acquire(self, resource_id: str, token: CancelToken) -> _Worker:
        with self._cond:
            while True:
                if self.closed:
                    raise EngineError("the process pool is closed")
                idle = [w for w in self._workers if not w.busy]
                if idle:
                    home = self._workers[hash(resource_id) % len(self._workers)]
                    worker = next((w for w in idle if resource_id in w.warm), None) or (
                        home if not home.busy else idle[0])
                    worker.busy = True
                    return worker
                reason = token.poll()
                if reason is not None:
                    raise _stopped(reason, "while every worker process was busy")
                self._cond.wait(min(max(token.remaining, 0.001), 0.05))

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            worker.busy = False
            self._cond.notify()

    def _replace(self, worker: _Worker) -> None:
        with self._cond:
            if self.closed or self._workers[worker.slot] is not worker:
                return
            self._workers[worker.slot] = _Worker(worker.slot, self._ctx, self._spec)
            self.restarts += 1
        worker.process.join(1.0)
        worker.conn.close()
        worker.cancels.close()

    # -- running ---------------------------------------------------------------------------
    def run(self, engine: str, ctx: ExecutionContext) -> EngineResult:
        """Run ``ctx`` on engine ``engine`` in a worker; raise its typed error on failure."""
        token = ctx.token
        worker = self._acquire(ctx.resource.id, token)
        try:
            if not worker.ready:
                try:
                    worker.await_ready(self.start_timeout, token)
                except EngineError as exc:  # it will never serve: start another next time
                    self.start_error = exc.message
                    self._replace(worker)
                    raise
            return self._run_on(worker, engine, ctx)
        finally:
            if worker.killed_for is not None:  # killed just as its answer arrived
                self._replace(worker)
            self._release(worker)

    def _run_on(self, worker: _Worker, engine: str, ctx: ExecutionContext) -> EngineResult:
        resource, token, conn = ctx.resource, ctx.token, worker.conn
        fresh = worker.sent.get(resource.id) is not resource
        msg = ("run", engine, ctx.execution_id, ctx.request, resource if fresh else None,
               ctx.fee_limit, token.deadline, ctx.invoke is not None)
        try:
            conn.send(msg)  # pickles first: nothing is written if the request cannot be
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidRequest(f"the request cannot be sent to a worker process: "
                                 f"{type(exc).__name__}: {exc}") from None
        except OSError:
            raise self._lost(worker, engine, ctx) from None
        flight = _Flight(self, worker, ctx.execution_id)
        token.on_cancel(flight.forward)
        try:
            if fresh:
                worker.sent[resource.id] = resource
            worker.executions += 1
            reply = conn.recv()
            while reply[0] not in ("done", "error"):
                conn.send(_answer(ctx, reply[0], reply[1:]))
                reply = conn.recv()
        except (EOFError, OSError):
            raise self._lost(worker, engine, ctx) from None
        except BaseException:
            # Interrupted mid-protocol (KeyboardInterrupt...): the worker's answer would be
            # read by the next execution, so this worker is discarded.
            worker.killed_for = ""
            worker.process.kill()
            raise
        finally:
            flight.done = True
        worker.warm.add(resource.id)
        if reply[0] == "done":
            return EngineResult(*reply[1:])  # output, fee, effects, memory, usage, cpu
        cls = ERROR_OF_KIND.get(ErrorKind(reply[1]), EngineError)
        raise cls(reply[2], source=reply[3], fee_used=reply[4])

    def _lost(self, worker: _Worker, engine: str, ctx: ExecutionContext) -> CoordinatorError:
        """The worker died: replace it, and say why the execution ended."""
        worker.process.join(1.0)
        code = worker.process.exitcode
        self._replace(worker)
        reason = ctx.token.reason
        if worker.killed_for == ctx.execution_id and reason is not None:
            text = "cancelled" if reason is ErrorKind.CANCELLED else "deadline passed"
            return ERROR_OF_KIND[reason](
                f"{text}; engine {engine} did not stop within {self.kill_grace} s, so its "
                f"worker process {worker.pid} was killed and replaced", source=engine)
        return EngineError(
            f"worker process {worker.pid} running engine {engine} died (exit code {code}) "
            f"during execution {ctx.execution_id}; it has been replaced", source=engine)

    # -- status and shutdown ---------------------------------------------------------------
    def holds(self, resource_id: str) -> bool:
        return any(resource_id in w.warm for w in self._workers)

    def stats(self) -> dict[str, Any]:
        workers = list(self._workers)
        return {
            "processes": len(workers),
            "busy": [w.busy for w in workers],
            "restarts": self.restarts,
            "executions": [w.executions for w in workers],
            "pids": [w.pid for w in workers],
        }

    def close(self) -> None:
        with self._cond:
            if self.closed:
                return
            self.closed = True
            workers = list(self._workers)
        for worker in workers:
            worker.stop()


def _answer(ctx: ExecutionContext, tag: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Serve a worker's read of committed state or code, with the parent's context."""
    try:
        if tag == "state":
            return ("ok", ctx.state_get(*args))
        if tag == "code":
            return ("ok", ctx.load_code())
        return ("err", ErrorKind.INTERNAL.value, f"unknown worker request {tag!r}")
    except CoordinatorError as exc:
        return ("err", exc.kind.value, exc.message)
    except Exception as exc:
        return ("err", ErrorKind.INTERNAL.value, f"{tag} read failed: {type(exc).__name__}: {exc}")


def _stopped(reason: ErrorKind, when: str) -> CoordinatorError:
    text = "cancelled" if reason is ErrorKind.CANCELLED else "deadline passed"
    return ERROR_OF_KIND.get(reason, EngineError)(f"{text} {when}")
