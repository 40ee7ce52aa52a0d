"""The engine actor: one Ray actor holding its own instance of one engine and its caches.

It loads the coordinator's plugins from the recipe ``coordinator.engine_recipe`` gave (the
contract's ``EngineRecipe``, the one worker processes use) and serves executions. ``run`` is
a streaming generator: each execution runs on a thread of the actor while the generator
yields what the engine needs from the coordinator, then the outcome:

- ``("state", call_id, key)`` — a read of committed state (unless the actor reads the
  coordinator's SQLite file itself, on the coordinator's own node);
- ``("code", call_id)`` — the resource's code, answered with a reference into Ray's object
  store keyed by the resource's content id, so each actor fetches it once, when its engine's
  cache misses, and it never travels with an execution;
- ``("invoke", call_id, request)`` — a nested execution, run by the coordinator's pipeline;
- ``("resource", call_id, rid)`` — a resource's description, for host functions that need
  one (``model_infer``);
- ``("done", output, fee_used, effects)`` or ``("error", kind, message, source, fee_used)``.

The coordinator answers a call with ``answer`` and forwards a cancel with ``cancel``; both run
in the actor's ``control`` concurrency group, so they reach it while ``run`` is busy. The
actor never writes: effects travel back in ``done`` and the coordinator commits them.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from loguru import logger

from coordinator_hookspecs import (
    ERROR_OF_KIND,
    CancelToken,
    CoordinatorError,
    EngineBase,
    EngineRecipe,
    ErrorKind,
    ExecutionContext,
    ExecutionRequest,
    ExecutionResult,
    InternalError,
    ResourceInfo,
    method_or_default,
)

#: Sentinel the execution thread puts on its flight's queue when the outcome is ready.
_END = object()


class _Flight:
    """One execution in the actor: its token, the queue of what the generator yields, and
    the replies of the coordinator to its calls."""

    def __init__(self, eid: str, token: CancelToken) -> None:
        self.eid = eid
        self.token = token
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ids = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, list[Any]] = {}

    def call(self, tag: str, *args: Any) -> Any:
        """Ask the coordinator (from the execution thread) and wait for its answer."""
        with self._lock:
            self._ids += 1
            call_id = self._ids
        waiter = threading.Lock()
        waiter.acquire()
        slot: list[Any] = [waiter, False, None]
        self._waiting[call_id] = slot
        self.outbox.put((tag, call_id, *args))
        waiter.acquire()
        if slot[1]:
            return slot[2]
        raise slot[2]

    def answer(self, call_id: int, ok: bool, value: Any) -> None:
        slot = self._waiting.pop(call_id, None)
        if slot is not None:
            slot[1], slot[2] = ok, value
            slot[0].release()


_current = threading.local()


def _resource_lookup(rid: str) -> ResourceInfo:
    """A host function's resource lookup: asked of the coordinator by the execution that
    runs on this thread."""
    flight: _Flight | None = getattr(_current, "flight", None)
    if flight is None:
        raise InternalError("a resource lookup outside an execution of this actor")
    return flight.call("resource", rid)


class EngineActor:
    """Serves executions of engine ``name`` (wrapped by ``ray.remote`` in ``group.py``)."""

    def __init__(self, recipe: EngineRecipe, name: str, coordinator_node: str,
                 local_state_reads: bool) -> None:
        import ray

        self.name = name
        self.node_id = ray.get_runtime_context().get_node_id()
        engines, registry = recipe.load_engines()
        self.engine = engines[name]
        for record in registry.host_functions:  # the coordinator's lookups, through it
            bind = getattr(record.func, "bind", None)
            if callable(bind):
                bind(_resource_lookup)
        self.state = (recipe.open_state_reader()
                      if local_state_reads and self.node_id == coordinator_node else None)
        self.resources: dict[str, ResourceInfo] = {}
        self.flights: dict[str, _Flight] = {}
        self.early: OrderedDict[str, ErrorKind] = OrderedDict()
        self.lock = threading.Lock()
        self.executions = 0

    def info(self) -> dict[str, Any]:
        """Where this actor runs: its process and node (answered once it is ready)."""
        return {"pid": os.getpid(), "node_id": self.node_id,
                "state_reads": "sqlite" if self.state is not None else "coordinator"}

    def run(self, eid: str, request: ExecutionRequest, resource: ResourceInfo | None,
            fee_limit: int, remaining: float, nested: bool) -> Iterator[tuple[Any, ...]]:
        if resource is None:
            resource = self.resources[request.resource_id]
        else:
            self.resources[resource.id] = resource
        # ``remaining`` travels, not the deadline: another node's monotonic clock differs.
        token = CancelToken(time.monotonic() + remaining if remaining != float("inf")
                            else float("inf"))
        flight = _Flight(eid, token)
        with self.lock:
            self.flights[eid] = flight
            early = self.early.pop(eid, None)
        if early is not None:
            token.cancel(early)
        worker = threading.Thread(target=self._execute, name=f"execution-{eid[:8]}",
                                  args=(flight, request, resource, fee_limit, nested),
                                  daemon=True)
        worker.start()
        try:
            while True:
                item = flight.outbox.get()
                if item is _END:
                    break
                yield item
            yield flight.outcome  # type: ignore[attr-defined]
        finally:
            with self.lock:
                self.flights.pop(eid, None)

    def _execute(self, flight: _Flight, request: ExecutionRequest, resource: ResourceInfo,
                 fee_limit: int, nested: bool) -> None:
        _current.flight = flight
        state_get = (self.state.reader(resource.id) if self.state is not None
                     else lambda key: flight.call("state", key))

        def load_code() -> bytes:
            import ray

            return ray.get(flight.call("code")[0])

        def invoke(nested_request: ExecutionRequest) -> ExecutionResult:
            return flight.call("invoke", nested_request)

        ctx = ExecutionContext(
            execution_id=flight.eid, request=request, resource=resource, fee_limit=fee_limit,
            token=flight.token, state_get=state_get, load_code=load_code,
            invoke=invoke if nested else None)
        try:
            result = self.engine.execute(ctx)
            outcome: tuple[Any, ...] = ("done", result.output, result.fee_used,
                                        tuple(result.effects))
        except CoordinatorError as exc:
            outcome = ("error", exc.kind.value, exc.message, exc.source, exc.fee_used)
        except Exception as exc:  # an engine bug: the same report as on the thread path
            logger.opt(exception=exc).warning("engine {} raised {}", self.name,
                                              type(exc).__name__)
            outcome = ("error", ErrorKind.ENGINE_ERROR.value,
                       f"engine {self.name} raised {type(exc).__name__}: {exc}", self.name, 0)
        finally:
            _current.flight = None
        self.executions += 1
        flight.outcome = outcome  # type: ignore[attr-defined]
        flight.outbox.put(_END)

    def answer(self, eid: str, call_id: int, ok: bool, value: Any) -> None:
        """The coordinator's answer to call ``call_id`` of execution ``eid``."""
        flight = self.flights.get(eid)
        if flight is not None:
            if not ok and not isinstance(value, BaseException):
                value = InternalError(str(value))
            flight.answer(call_id, ok, value)

    def cancel(self, eid: str, reason: str) -> None:
        """Cancel execution ``eid`` (kept for a moment if its ``run`` has not started)."""
        kind = ErrorKind(reason)
        with self.lock:
            flight = self.flights.get(eid)
            if flight is None:
                self.early[eid] = kind
                while len(self.early) > 64:  # stale cancels of finished executions
                    self.early.popitem(last=False)
                return
        flight.token.cancel(kind)

    def close(self) -> None:
        method_or_default(self.engine, "close", EngineBase)()
        if self.state is not None:
            self.state.close()


def error_of(reply: tuple[Any, ...]) -> CoordinatorError:
    """The typed error of an ``("error", kind, message, source, fee_used)`` reply."""
    cls = ERROR_OF_KIND.get(ErrorKind(reply[1]), InternalError)
    return cls(reply[2], source=reply[3], fee_used=reply[4])
