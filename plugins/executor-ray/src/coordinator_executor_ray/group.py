"""The coordinator's side of one engine's actors: placement, routing, the execution
protocol (``actor.py``), cancel, death, replacement and the one retry.

- Placement: ``actors_per_node`` actors on every alive node that has what the engine's
  actors need (``[ray] resources``), each pinned to its node; a replacement is pinned
  softly, so it lands elsewhere when the node is gone.
- Routing (affinity): a resource goes to an actor with spare capacity that already ran it
  (its engine holds the compiled module), else to its home actor by hash, else to the least
  loaded; when every actor is full the caller waits, bounded by the execution's deadline.
- Cancel and timeout: the token's ``on_cancel`` calls the actor's ``cancel`` (a control
  method that runs beside ``run``), which cancels the actor's own token; an actor that has
  not answered ``kill_grace`` seconds later is killed and replaced and the execution ends
  with the cancel's kind.
- Death: an actor that dies mid-execution fails it with ``engine_error`` (the coordinator
  records the failure and applies nothing) and is replaced; with ``retry_on_worker_death``
  an execution that had no result and made no nested call runs once more on another actor.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from loguru import logger

from coordinator_executor_ray.actor import EngineActor, error_of
from coordinator_executor_ray.cluster import NAMESPACE
from coordinator_executor_ray.placement import actor_options
from coordinator_executor_ray.settings import RaySettings
from coordinator_hookspecs import (
    ERROR_OF_KIND,
    CancelToken,
    CoordinatorError,
    EngineError,
    EngineRecipe,
    EngineResult,
    ErrorKind,
    ExecutionContext,
    InvalidRequest,
    portable_error,
)

CONTROL = "control"
#: Code references kept per group (the object store frees a code once no actor holds it).
CODE_REFS = 256


class _Actor:
    """One engine actor as the coordinator holds it."""

    def __init__(self, slot: int, node_id: str, handle: Any, name: str) -> None:
        self.slot, self.node_id, self.handle, self.name = slot, node_id, handle, name
        self.ready = handle.info.options(concurrency_group=CONTROL).remote()
        self.info: dict[str, Any] | None = None
        self.inflight = 0
        self.executions = 0
        self.warm: set[str] = set()
        self.sent: dict[str, Any] = {}
        self.killed_for: set[str] = set()
        self.dead = False

    def describe(self) -> dict[str, Any]:
        info = self.info or {}
        return {"slot": self.slot, "name": self.name, "node_id": info.get("node_id", self.node_id),
                "pid": info.get("pid"), "ready": self.info is not None,
                "inflight": self.inflight, "executions": self.executions,
                "warm": len(self.warm), "state_reads": info.get("state_reads")}


class _Died(Exception):
    def __init__(self, error: CoordinatorError, retry: bool) -> None:
        super().__init__(error.message)
        self.error, self.retry = error, retry


class ActorGroup:
    """The actors of engine ``name``; the ``pool`` a ``PooledEngine`` runs executions on."""

    def __init__(self, name: str, recipe: EngineRecipe, settings: RaySettings,
                 nodes: list[str], coordinator_node: str,
                 resource: Callable[[str], Any], address: str,
                 on_close: Callable[[], None] = lambda: None) -> None:
        import ray

        self.name = name
        self.settings = settings
        self.address = address
        self.concurrency = settings.actor_concurrency
        self._resource = resource
        self._on_close = on_close
        self._cls = ray.remote(  # type: ignore[call-overload]
            max_concurrency=settings.actor_concurrency,
                               concurrency_groups={CONTROL: 4})(EngineActor)
        self._options = actor_options(settings.resources.get(name, {}))
        self._args = (recipe, name, coordinator_node, settings.local_state_reads)
        self._cond = threading.Condition()
        self._codes: OrderedDict[str, Any] = OrderedDict()
        self.restarts = 0
        self.retries = 0
        self.closed = False
        #: why an actor last failed to start (reported once by the stand-in's ``health``)
        self.start_error: str | None = None
        self.kill_grace = settings.kill_grace
        self._actors = [self._spawn(slot, node)
                        for slot, node in enumerate(n for n in nodes
                                                    for _ in range(settings.actors_per_node))]

    @property
    def capacity(self) -> int:
        return len(self._actors) * self.concurrency

    def _spawn(self, slot: int, node_id: str, soft: bool = False) -> _Actor:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        name = f"{self.name}-{slot}-{secrets.token_hex(4)}"
        handle = self._cls.options(
            **self._options, name=name, namespace=NAMESPACE,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=soft),
        ).remote(*self._args)
        return _Actor(slot, node_id, handle, name)

    def start(self) -> None:
        """Wait until every actor has loaded its engine (they start in parallel)."""
        for actor in self._actors:
            self._await_ready(actor)

    def _await_ready(self, actor: _Actor) -> None:
        import ray

        if actor.info is not None:
            return
        try:
            actor.info = ray.get(actor.ready, timeout=self.settings.start_timeout)
        except ray.exceptions.GetTimeoutError:
            raise EngineError(f"Ray actor {actor.slot} of engine {self.name} did not start "
                              f"within {self.settings.start_timeout} s ([ray] start_timeout); "
                              "does the cluster have the resources it asks for?",
                              source=self.name) from None
        except ray.exceptions.RayError as exc:
            raise EngineError(f"Ray actor {actor.slot} of engine {self.name} could not load "
                              f"its engine: {_short(exc)}", source=self.name) from None

    # -- routing ---------------------------------------------------------------------------
    def _acquire(self, resource_id: str, token: CancelToken) -> _Actor:
        limit = self.concurrency
        with self._cond:
            while True:
                if self.closed:
                    raise EngineError("the Ray executor is closed", source=self.name)
                actors = self._actors
                spare = [a for a in actors if a.inflight < limit and not a.dead]
                if spare:
                    home = actors[hash(resource_id) % len(actors)]
                    actor = next((a for a in spare if resource_id in a.warm), None) or (
                        home if home in spare else min(spare, key=lambda a: a.inflight))
                    actor.inflight += 1
                    return actor
                reason = token.poll()
                if reason is not None:
                    raise _stopped(reason, f"while every Ray actor of engine {self.name} "
                                           "was busy")
                self._cond.wait(min(max(token.remaining, 0.001), 0.05))

    def _release(self, actor: _Actor) -> None:
        with self._cond:
            actor.inflight -= 1
            self._cond.notify()

    def _replace(self, actor: _Actor) -> None:
        import ray

        with self._cond:
            actor.dead = True
            if self.closed or self._actors[actor.slot] is not actor:
                return
            # soft: the node may be gone with the actor; then Ray places it elsewhere
            self._actors[actor.slot] = self._spawn(actor.slot, actor.node_id, soft=True)
            self.restarts += 1
        try:
            ray.kill(actor.handle, no_restart=True)
        except Exception:  # gone already
            pass

    def holds(self, resource_id: str) -> bool:
        return any(resource_id in a.warm for a in self._actors)

    # -- running ---------------------------------------------------------------------------
    def run(self, engine: str, ctx: ExecutionContext) -> EngineResult:
        """Run ``ctx`` on one of the actors; raise its typed error on failure."""
        retried = False
        while True:
            actor = self._acquire(ctx.resource.id, ctx.token)
            try:
                try:
                    self._await_ready(actor)
                except EngineError as exc:  # it will never serve: start another
                    self.start_error = exc.message
                    self._replace(actor)
                    raise
                return self._run_on(actor, ctx)
            except _Died as died:
                self._replace(actor)
                if not (died.retry and self.settings.retry_on_worker_death and not retried
                        and ctx.token.poll() is None):
                    raise died.error from None
                retried = True
                self.retries += 1
                logger.warning("{}; running execution {} once more on another actor",
                               died.error.message, ctx.execution_id[:12])
            finally:
                self._release(actor)

    def _run_on(self, actor: _Actor, ctx: ExecutionContext) -> EngineResult:
        import ray

        resource, token, eid = ctx.resource, ctx.token, ctx.execution_id
        fresh = actor.sent.get(resource.id) is not resource
        try:
            stream = actor.handle.run.remote(eid, ctx.request, resource if fresh else None,
                                             ctx.fee_limit, token.remaining,
                                             ctx.invoke is not None)
        except Exception as exc:  # the arguments could not be serialised: nothing was sent
            raise InvalidRequest(f"the request cannot be sent to a Ray actor: "
                                 f"{type(exc).__name__}: {_short(exc)}") from None
        if fresh:
            actor.sent[resource.id] = resource
        actor.executions += 1
        done = threading.Event()
        token.on_cancel(lambda reason: self._forward(actor, eid, reason, done))
        nested = False
        try:
            for ref in stream:
                reply = ray.get(ref)
                tag = reply[0]
                if tag == "done":
                    actor.warm.add(resource.id)
                    return EngineResult(reply[1], reply[2], reply[3])
                if tag == "error":
                    actor.warm.add(resource.id)
                    raise error_of(reply)
                nested = nested or tag == "invoke"
                self._answer(actor, ctx, reply)
            raise EngineError(f"the Ray actor of engine {self.name} ended execution "
                              f"{eid[:12]} without an outcome", source=self.name)
        except ray.exceptions.RayError as exc:
            raise self._lost(actor, ctx, exc, retry=not nested) from None
        finally:
            done.set()

    def _answer(self, actor: _Actor, ctx: ExecutionContext, reply: tuple[Any, ...]) -> None:
        tag, call_id, args = reply[0], reply[1], reply[2:]
        value: Any
        try:
            if tag == "state":
                value, ok = ctx.state_get(*args), True
            elif tag == "code":
                value, ok = [self._code(ctx)], True
            elif tag == "invoke":
                if ctx.invoke is None:
                    raise EngineError("nested executions are not allowed here")
                value, ok = ctx.invoke(*args), True
            elif tag == "resource":
                value, ok = self._resource(*args), True
            else:
                raise EngineError(f"unknown request {tag!r} from a Ray actor")
        except Exception as exc:
            value, ok = portable_error(exc), False
        actor.handle.answer.options(concurrency_group=CONTROL).remote(
            ctx.execution_id, call_id, ok, value)

    def _code(self, ctx: ExecutionContext) -> Any:
        """The reference of the resource's code in Ray's object store, by content id: put
        there once, fetched by each actor whose engine lacks it."""
        import ray

        rid = ctx.resource.id
        with self._cond:
            ref = self._codes.get(rid)
            if ref is not None:
                self._codes.move_to_end(rid)
                return ref
        ref = ray.put(ctx.load_code())
        with self._cond:
            self._codes[rid] = ref
            while len(self._codes) > CODE_REFS:
                self._codes.popitem(last=False)
        return ref

    def _forward(self, actor: _Actor, eid: str, reason: ErrorKind,
                 done: threading.Event) -> None:
        if done.is_set():
            return
        try:
            actor.handle.cancel.options(concurrency_group=CONTROL).remote(eid, reason.value)
        except Exception:  # the actor is gone: its stream ends with the error
            return
        timer = threading.Timer(self.kill_grace, self._kill_if_stuck, (actor, eid, done))
        timer.daemon = True
        timer.start()

    def _kill_if_stuck(self, actor: _Actor, eid: str, done: threading.Event) -> None:
        import ray

        if not done.is_set():
            actor.killed_for.add(eid)
            try:
                ray.kill(actor.handle, no_restart=True)
            except Exception:
                pass

    def _lost(self, actor: _Actor, ctx: ExecutionContext, exc: BaseException,
              retry: bool) -> _Died:
        """The actor died (or its node did): say why the execution ended."""
        reason = ctx.token.reason
        info = actor.info or {}
        where = f"Ray actor {actor.slot} (pid {info.get('pid')}, node " \
                f"{str(info.get('node_id', actor.node_id))[:12]})"
        if ctx.execution_id in actor.killed_for and reason is not None:
            text = "cancelled" if reason is ErrorKind.CANCELLED else "deadline passed"
            return _Died(ERROR_OF_KIND[reason](
                f"{text}; engine {self.name} did not stop within {self.kill_grace} s, so its "
                f"{where} was killed and replaced", source=self.name), retry=False)
        return _Died(EngineError(
            f"engine {self.name}'s {where} died during execution {ctx.execution_id[:12]} "
            f"({type(exc).__name__}); nothing was applied, the actor is replaced",
            source=self.name), retry=retry)

    # -- metrics and shutdown --------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        from coordinator_executor_ray.cluster import alive_nodes

        try:
            nodes = [n["node_id"] for n in alive_nodes()]
        except Exception:  # the cluster is unreachable: the actors still tell
            nodes = []
        return {"executor": "ray", "address": self.address, "nodes": nodes,
                "actors": [a.describe() for a in self._actors],
                "restarts": self.restarts, "retries": self.retries}

    def close(self) -> None:
        import ray

        with self._cond:
            if self.closed:
                return
            self.closed = True
            actors = list(self._actors)
            self._cond.notify_all()
        for actor in actors:
            try:
                ray.kill(actor.handle, no_restart=True)
            except Exception:
                pass
        self._on_close()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


def _stopped(reason: ErrorKind, when: str) -> CoordinatorError:
    text = "cancelled" if reason is ErrorKind.CANCELLED else "deadline passed"
    return ERROR_OF_KIND.get(reason, EngineError)(f"{text} {when}")
