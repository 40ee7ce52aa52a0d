"""The worker-process side of the process pool: load engines, then serve executions.

Protocol on the worker's duplex pipe (pickled tuples; one execution at a time per worker):

parent -> worker  ``("run", engine, execution_id, request, resource | None, fee_limit,
                  deadline, nested)`` — ``resource`` is None when this worker already holds
                  the same ``ResourceInfo``; ``deadline`` is absolute ``time.monotonic()``
                  (one system-wide clock, so it means the same in both processes).
                  ``("stop",)`` ends the worker.
worker -> parent  ``("ready", pid)`` or ``("failed", message)`` once at start;
                  ``("code",)`` — and ``("state", key)`` unless the worker reads the
                  SQLite store itself (``state.py``) — during an execution, answered
                  with ``("ok", value)`` or ``("err", kind, message)`` by the parent;
                  ``("done", output, fee_used, effects, memory_bytes, usage, cpu_seconds)``
                  (``cpu_seconds``: the worker thread's CPU clock over ``engine.execute``) or
                  ``("error", kind, message, source, fee_used)`` at the end.

Cancels travel on a second, one-way pipe as ``(execution_id, reason)``, read by a listener
thread that cancels the local ``CancelToken`` (firing the engine's ``on_cancel`` callbacks)
while the main thread is inside ``engine.execute``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import OrderedDict
from multiprocessing.connection import Connection
from time import thread_time_ns
from typing import Any

from coordinator_core.engines.processes.spec import WorkerSpec, load_engines
from coordinator_core.engines.processes.state import open_reader
from coordinator_core.log import logger
from coordinator_hookspecs import (
    ERROR_OF_KIND,
    CancelToken,
    CoordinatorError,
    EngineBase,
    EngineError,
    ErrorKind,
    ExecutionContext,
    ExecutionRequest,
    ExecutionResult,
    InternalError,
    ResourceInfo,
    method_or_default,
)

NESTED_UNAVAILABLE = (
    "nested executions (ctx.invoke, the hybrid flow) are not available to engine {name} "
    "running in a worker process; run it with [dispatch] executor = \"threads\" or leave it "
    "out of [dispatch] process_engines"
)


class _Current:
    """The execution the worker is running, for the cancel listener. A cancel that arrives
    before its ``run`` message (the two pipes race) is kept and applied at start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._eid: str | None = None
        self._token: CancelToken | None = None
        self._early: OrderedDict[str, ErrorKind] = OrderedDict()

    def start(self, eid: str, token: CancelToken) -> None:
        with self._lock:
            self._eid, self._token = eid, token
            reason = self._early.pop(eid, None)
        if reason is not None:
            token.cancel(reason)

    def finish(self) -> None:
        with self._lock:
            self._eid = self._token = None

    def cancel(self, eid: str, reason: ErrorKind) -> None:
        with self._lock:
            token = self._token if eid == self._eid else None
            if token is None:
                self._early[eid] = reason
                while len(self._early) > 64:  # stale cancels of finished executions
                    self._early.popitem(last=False)
        if token is not None:
            token.cancel(reason)


def _listen_cancels(conn: Connection, current: _Current) -> None:
    while True:
        try:
            eid, reason = conn.recv()
        except (EOFError, OSError):
            return
        current.cancel(eid, ErrorKind(reason))


class _Remote:
    """``state_get`` / ``load_code`` of a worker's context: one round trip to the parent."""

    __slots__ = ("_conn", "_op")

    def __init__(self, conn: Connection, op: str) -> None:
        self._conn = conn
        self._op = op

    def __call__(self, *args: Any) -> Any:
        self._conn.send((self._op, *args))
        reply = self._conn.recv()
        if reply[0] == "ok":
            return reply[1]
        raise ERROR_OF_KIND.get(ErrorKind(reply[1]), InternalError)(reply[2])


def _no_nested(name: str) -> Any:
    def invoke(request: ExecutionRequest) -> ExecutionResult:
        raise EngineError(NESTED_UNAVAILABLE.format(name=name), source=name)

    return invoke


def _execute(engine: Any, name: str, msg: tuple[Any, ...], resource: ResourceInfo,
             token: CancelToken, conn: Connection, state_get: Any) -> tuple[Any, ...]:
    _, _, eid, request, _, fee_limit, _, nested = msg
    ctx = ExecutionContext(
        execution_id=eid,
        request=request,
        resource=resource,
        fee_limit=fee_limit,
        token=token,
        state_get=state_get,
        load_code=_Remote(conn, "code"),
        invoke=_no_nested(name) if nested else None,
    )
    try:
        cpu0 = thread_time_ns()
        result = engine.execute(ctx)
        cpu = (thread_time_ns() - cpu0) * 1e-9 + result.cpu_seconds
        return ("done", result.output, result.fee_used, tuple(result.effects),
                result.memory_bytes, result.usage, cpu)
    except CoordinatorError as exc:
        return ("error", exc.kind.value, exc.message, exc.source, exc.fee_used)
    except Exception as exc:  # an engine bug: the same report as on the thread path
        logger.opt(exception=exc).warning("engine {} raised {}", name, type(exc).__name__)
        return ("error", ErrorKind.ENGINE_ERROR.value,
                f"engine {name} raised {type(exc).__name__}: {exc}", name, 0)


def worker_main(spec: WorkerSpec, conn: Connection, cancels: Connection) -> None:
    """Entry point of a worker process (``multiprocessing`` target)."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engines = load_engines(spec)
        state = open_reader(spec.state)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    current = _Current()
    threading.Thread(target=_listen_cancels, args=(cancels, current), daemon=True,
                     name="coordinator-worker-cancels").start()
    resources: dict[str, ResourceInfo] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent went away
            break
        if msg[0] != "run":
            break
        name, eid, request, resource = msg[1], msg[2], msg[3], msg[4]
        if resource is None:
            resource = resources[request.resource_id]
        else:
            resources[resource.id] = resource
        token = CancelToken(msg[6])
        current.start(eid, token)
        try:
            state_get = state.reader(resource.id) if state else _Remote(conn, "state")
            reply = _execute(engines[name], name, msg, resource, token, conn, state_get)
        finally:
            current.finish()
        try:
            conn.send(reply)
        except Exception as exc:  # e.g. an output that cannot be pickled
            conn.send(("error", ErrorKind.ENGINE_ERROR.value,
                       f"engine {name}'s result could not be returned from the worker "
                       f"process: {type(exc).__name__}: {exc}", name, reply[2]
                       if reply[0] == "done" else 0))
    for engine in engines.values():
        method_or_default(engine, "close", EngineBase)()
    if state is not None:
        state.close()
