"""One worker process as the coordinator holds it: the process, its pipe, its start and
stop, and the routing keys the coordinator picks workers by (``pool.py``)."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from coordinator_core.engines.processes.spec import WorkerSpec
from coordinator_core.workers.channel import Channel
from coordinator_core.workers.worker import FAILED, READY, worker_main
from coordinator_hookspecs import EngineError

#: Seconds a worker process may take to load its plugins and report ready.
START_TIMEOUT = 120.0
#: Seconds ``close`` waits for a worker to exit after ``stop`` before killing it.
STOP_TIMEOUT = 10.0


class WorkerProcess:
    """One worker process and its pipe; ``inflight`` counts executions handed to it."""

    def __init__(self, index: int, ctx: Any, spec: WorkerSpec) -> None:
        self.index = index
        conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=worker_main, args=(spec, child),
                                   name=f"coordinator-worker-{index}", daemon=True)
        self.process.start()
        child.close()  # only the child holds its end: a dead worker shows up as EOF here
        self.channel = Channel(conn, f"worker process {index} (pid {self.process.pid})")
        self.pid = self.process.pid
        self.inflight = 0
        self.alive = True  # False from the moment its pipe closed
        self.reader: threading.Thread | None = None

    def await_ready(self, timeout: float) -> None:
        conn = self.channel.conn
        if not conn.poll(timeout):
            self.process.kill()
            raise EngineError(f"worker process {self.pid} did not start within {timeout} s")
        try:
            message = self.channel.recv()
        except (EOFError, OSError):
            self.process.join(5)
            message = (FAILED, f"exited with code {self.process.exitcode} before loading its "
                       "plugins (its error is on stderr; a script that opens a coordinator "
                       "with [coordinator] processes must guard its top level with "
                       "if __name__ == \"__main__\": each worker imports it)")
        if message[0] != READY:
            self.process.kill()
            raise EngineError(f"worker process {self.pid} failed to start: {message[1]}")


    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """After ``("stop",)`` was sent (or with ``timeout`` 0, at once): wait for the process
        to exit, kill it if it does not, wait for its reader, close the pipe."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        if self.reader is not None and self.reader is not threading.current_thread():
            self.reader.join(STOP_TIMEOUT)
        self.channel.close()


def load(proc: WorkerProcess) -> int:
    """Executions in flight on ``proc`` (least loaded routing)."""
    return proc.inflight


def home(resource_id: str, count: int) -> int:
    """The index of the worker ``resource_id`` hashes to (affinity routing)."""
    return int.from_bytes(hashlib.sha256(resource_id.encode()).digest()[:8], "big") % count
