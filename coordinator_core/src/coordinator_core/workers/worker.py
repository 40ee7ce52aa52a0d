"""A worker process: a whole coordinator pipeline whose writes go to the coordinator's writer.

The worker loads the coordinator's plugins and configuration from its recipe (the same
``WorkerSpec`` the engine process pool uses) and opens an ordinary ``Coordinator`` on the
data directory, with three differences:

- its store is a ``WorkerStore``: reads local, every commit a call to the writer;
- quota is off (the coordinator admitted the execution against the one quota state);
- its only metrics sink is a ``ResultForwarder``, which sends each execution's result and
  stage timings to the coordinator, where the real sinks run; it has no audit sinks (the
  coordinator hands what it committed to them).

Protocol on the pipe (pickled tuples; see ``channel.py`` for calls and replies):

coordinator -> worker  ``("run", execution_id, request, deadline)`` (absolute
                       ``time.monotonic()``, one clock for every process of the machine);
                       calls ``("cancel", id, execution_id)``, ``("status", id,
                       execution_id)``; ``("stop",)``.
worker -> coordinator  ``("ready", pid)`` or ``("failed", message)`` once;
                       ``("result", result, resource_type, stages)`` per execution, nested
                       ones included, or ``("done", record, children, result,
                       resource_type, stages)`` for one whose record is still to be
                       committed (no effects); calls ``("finish", id, record, effects,
                       children)``
                       and ``("append", id, records)`` (``remote_store.py``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import OrderedDict
from multiprocessing.connection import Connection
from queue import SimpleQueue
from typing import Any

import attrs

from coordinator_core.engines.processes.spec import WorkerSpec, load_plugins
from coordinator_core.log import logger
from coordinator_core.plugin_host.config import ProcessCount
from coordinator_core.store import store_settings
from coordinator_core.workers.channel import Channel, serve
from coordinator_core.workers.remote_store import WorkerStore
from coordinator_hookspecs import (
    EngineBase,
    ErrorInfo,
    ErrorKind,
    ExecutionReport,
    MetricsSinkBase,
    MetricsSinkRecord,
    NotFound,
    Status,
    method_or_default,
)

RUN, CANCEL, STATUS, STOP, READY, FAILED, RESULT, DONE = (
    "run", "cancel", "status", "stop", "ready", "failed", "result", "done")


class ResultForwarder(MetricsSinkBase):
    """The worker's one metrics sink: the report of every execution, as the pipeline's last
    step, goes to the coordinator, which completes the caller's handle and runs its sinks.
    A final record the store kept back (an execution without effects) goes with it as
    ``("done", record, children, result, resource_type, stages)``, to be committed first."""

    def __init__(self, channel: Channel) -> None:
        self._send = channel.send
        self.unsent: Any = None  # the store's per-thread kept records (``attach``)

    def record(self, report: ExecutionReport) -> None:
        result = report.result
        kept = self.unsent.__dict__.pop("item", None) if self.unsent is not None else None
        if kept is not None and kept[0].execution_id != result.execution_id:
            self._send((DONE, kept[0], kept[1], None, None, ()))  # a stray: commit it alone
            kept = None
        try:
            if kept is not None:
                self._send((DONE, kept[0], kept[1], result, report.resource_type,
                            report.stages))
            else:
                self._send((RESULT, result, report.resource_type, report.stages))
            return
        except Exception as exc:  # an output pickle refuses: the caller still gets an end
            logger.warning("the result of {} could not be sent: {}", result.execution_id, exc)
            error = ErrorInfo(ErrorKind.ENGINE_ERROR, "the execution's output could not be "
                              f"returned from its worker process: {type(exc).__name__}: {exc}",
                              result.engine)
        failed = attrs.evolve(result, output=None, error=error,
                              status=Status.FAILED if result.ok else result.status)
        if kept is None:
            self._send((RESULT, failed, report.resource_type, report.stages))
            return
        # Its record must say what the caller is told: failed, nothing was kept.
        record = attrs.evolve(kept[0], status=failed.status.value, error_kind=error.kind.value,
                              message=error.message)
        self._send((DONE, record, kept[1], failed, report.resource_type, report.stages))


def open_worker(spec: WorkerSpec, channel: Channel) -> Any:
    """The worker's coordinator (see the module docstring)."""
    from coordinator_core.coordination.coordinator import Coordinator

    core = attrs.evolve(spec.core, processes=ProcessCount(0), enable_quota_management=False)
    loaded = load_plugins(spec, core)
    forwarder = ResultForwarder(channel)
    registry = attrs.evolve(
        loaded.registry,
        metrics_sinks=(MetricsSinkRecord(name="result-forwarder", sink=forwarder, order=0),),
        audit_sinks=(),
    )
    for record in loaded.registry.metrics_sinks + loaded.registry.audit_sinks:
        try:  # built, never used here: close what may hold a thread or a file
            close = getattr(record.sink, "close", None)
            if callable(close):
                close()
        except Exception:
            pass
    settings = attrs.asdict(store_settings(loaded.config))
    store = WorkerStore(spec.data_dir, **settings).attach(channel, keep=True)
    forwarder.unsent = store.unsent
    coordinator = Coordinator(loaded.config, loaded.host, registry, store)
    coordinator.host.broadcast("coordinator_startup", coordinator=coordinator)
    for engine_record in registry.engines:  # a worker is long-lived: load runtimes first
        method_or_default(engine_record.engine, "warm_up", EngineBase)()
    return coordinator


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a worker process (``multiprocessing`` target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when we stop
    channel = Channel(conn, "the coordinator process")
    try:
        coordinator = open_worker(spec, channel)
    except Exception as exc:
        channel.send((FAILED, f"{type(exc).__name__}: {exc}"))
        return
    channel.send((READY, os.getpid()))
    ledger = coordinator.ledger
    early: OrderedDict[str, None] = OrderedDict()  # cancels that overtook their run
    queue = start_threads(coordinator)

    def handle(message: tuple[Any, ...]) -> bool:
        tag = message[0]
        if tag == RUN:
            _, execution_id, request, deadline = message
            entry = ledger.open(request, deadline, Status.QUEUED, execution_id)
            if early and execution_id in early:
                del early[execution_id]
                entry.token.cancel(ErrorKind.CANCELLED)
            queue.put(entry)
        elif tag == CANCEL:
            channel.reply(message[1], _cancel(coordinator, message[2], early))
        elif tag == STATUS:
            channel.reply(message[1], _status(coordinator, message[2]))
        else:
            return False
        return True

    serve(channel, handle)
    for _ in range(coordinator.config.core.workers):
        queue.put(None)
    coordinator.close()


def start_threads(coordinator: Any) -> SimpleQueue[Any]:
    """``workers`` threads running queued entries through the pipeline: what
    ``Coordinator.submit`` does, without a ``Future`` per execution (the result leaves
    through ``ResultForwarder``). A cancel or deadline of a queued entry is recorded by the
    coordinator's ``cancel`` / watchdog; the thread that reaches it then skips it."""
    queue: SimpleQueue[Any] = SimpleQueue()
    claim, run = coordinator.ledger.claim, coordinator.pipeline.run

    def serve_queue() -> None:
        while (entry := queue.get()) is not None:
            if not claim(entry):
                continue
            try:
                run(entry)
            except BaseException as exc:  # the pipeline records its own failures
                logger.opt(exception=exc).error("execution {} failed in the worker",
                                                entry.execution_id)

    for index in range(coordinator.config.core.workers):
        threading.Thread(target=serve_queue, daemon=True,
                         name=f"coordinator-worker-thread-{index}").start()
    return queue


def _cancel(coordinator: Any, execution_id: str, early: OrderedDict[str, None]) -> bool:
    try:
        return bool(coordinator.cancel(execution_id))
    except NotFound:  # its run message is still on the way: cancelled when it arrives
        early[execution_id] = None
        while len(early) > 1024:
            early.popitem(last=False)
        return True


def _status(coordinator: Any, execution_id: str) -> Status | None:
    entry = coordinator.ledger.get(execution_id)
    return entry.status if entry is not None else None
