"""ExecutionCoordinator of SPEC.md: the one entry point (DESIGN.md §3).

``Coordinator.open`` discovers plugins, validates config, freezes the registry into the
pipeline and opens the store; afterwards no hook is called until ``close``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from os import PathLike
from pathlib import Path
from typing import Any

from coordinator_core.coordination.resources import ResourceCoordinator
from coordinator_core.engines.dispatcher import Dispatcher
from coordinator_core.execution.handles import ExecutionHandle, ExecutionStatus
from coordinator_core.execution.ledger import Entry, Ledger
from coordinator_core.execution.locks import shared_locks
from coordinator_core.execution.pipeline import Pipeline
from coordinator_core.execution.watchdog import Watchdog
from coordinator_core.log import logger
from coordinator_core.plugin_host.bootstrap import Loaded, bootstrap, check_required
from coordinator_core.plugin_host.builtins import BUILTIN_PLUGINS
from coordinator_core.plugin_host.config import Config, load_config
from coordinator_core.plugin_host.host import PluginHost
from coordinator_core.plugin_host.registry import Registry
from coordinator_core.services.audit.sinks import AuditSinks
from coordinator_core.services.metrics.builtin import COLLECTOR_NAME
from coordinator_core.services.metrics.sinks import MetricsSinks
from coordinator_core.services.quota.manager import QuotaManager
from coordinator_core.services.security.integrator import SecurityIntegrator
from coordinator_core.store import MEMORY, open_store
from coordinator_core.store.base import BoundProcessor, Store
from coordinator_hookspecs import (
    ErrorKind,
    ExecutionRequest,
    ExecutionResult,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Status,
)

#: Seconds ``close`` waits for executions it cancelled to end.
CLOSE_GRACE = 5.0
#: Seconds ``close`` waits, in total, for the metrics and audit sinks to close.
CLOSE_SINKS = 5.0


class Coordinator(ResourceCoordinator):
    """The execution coordinator. Use :meth:`open`; close it (or use ``with``).

    Deploy and resource methods come from :class:`ResourceCoordinator`."""

    def __init__(self, config: Config, host: PluginHost, registry: Registry, store: Store) -> None:
        self.config = config
        self.host = host
        self.registry = registry
        self.store = store
        settings = config.core
        dispatch = config.section("dispatch")
        self.dispatcher = Dispatcher(
            registry.engines,
            strategy=dispatch.strategy,
            pin_types=dispatch.pin_types,
            pin_resources=dispatch.pin_resources,
            required_features=dispatch.required_features,
            health_interval=dispatch.health_interval,
        )
        self.security = SecurityIntegrator(registry.validators, threshold=settings.risk_threshold)
        self.quota = QuotaManager(registry.quota_policies)
        self.ledger = Ledger(settings.ledger_retention)
        state_locks = shared_locks(
            None if str(config.data_dir) == MEMORY else Path(config.data_dir) / "state.lock"
        )
        try:
            self._assemble(config, registry, store, settings, state_locks)
        except BaseException:
            state_locks.close()
            raise

    def _assemble(self, config: Config, registry: Registry, store: Store, settings: Any,
                  state_locks: Any) -> None:
        """The rest of ``__init__``, once the state locks are taken (given back if it fails:
        they are shared by every coordinator of the directory in this process)."""
        self.metrics_sinks = MetricsSinks([(r.name, r.sink) for r in registry.metrics_sinks])
        self.audit_sinks = AuditSinks([(r.name, r.sink) for r in registry.audit_sinks])
        self.pipeline = Pipeline(
            settings=settings,
            store=store,
            ledger=self.ledger,
            dispatcher=self.dispatcher,
            security=self.security,
            quota=self.quota,
            processors=[
                BoundProcessor.of(r.name, r.processor, r.kinds)
                for r in registry.effect_processors
            ],
            metrics=self.metrics_sinks,
            audit=self.audit_sinks,
            state_locks=state_locks,
        )
        for bound in self.dispatcher.engines:
            bound.bind_host_functions(registry.host_functions)
        self._collector = next(
            (r.sink for r in registry.metrics_sinks if r.name == COLLECTOR_NAME), None
        )
        self._pool: ThreadPoolExecutor | None = None
        self._queue_lock = threading.Lock()
        self._queued = 0  # submitted, not yet taken by a worker (see max_queued)
        self._watchdog = Watchdog(self.ledger, self._finish_unstarted)
        self._watchdog.start()
        self._closed = False

    # -- opening and closing ---------------------------------------------------------------
    @classmethod
    def open(
        cls,
        config_path: str | PathLike[str] | None = None,
        *,
        data_dir: str | PathLike[str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        plugins: Iterable[Any] = (),
        entry_points: bool = True,
        builtins: Iterable[tuple[str, str]] = BUILTIN_PLUGINS,
    ) -> Coordinator:
        """Load config, discover plugins (built-ins, entry points, then ``plugins`` given
        inline), freeze the pipeline and open the store in the data directory."""
        config = load_config(config_path, data_dir=data_dir, overrides=overrides)
        return cls.from_loaded(
            bootstrap(config, builtins=builtins, entry_points=entry_points, inline=plugins)
        )

    @classmethod
    def from_loaded(cls, loaded: Loaded) -> Coordinator:
        """Open a coordinator on plugins already loaded (:func:`bootstrap`; the CLI loads
        them once per command). Fails closed if a ``required_plugins`` entry is not running."""
        config, host, registry = loaded.config, loaded.host, loaded.registry
        try:
            check_required(host, config.core.required_plugins)
            store = open_store(config)
        except BaseException:
            loaded.discard()
            raise
        try:
            coordinator = cls(config, host, registry, store)
        except Exception:
            store.close()
            loaded.discard()
            raise
        try:
            coordinator._start_process_pool()
            host.broadcast("coordinator_startup", coordinator=coordinator)
        except BaseException:
            coordinator.close()
            raise
        return coordinator

    def _start_process_pool(self) -> None:
        """``[dispatch] executor = "processes"``: move the engines into worker processes.

        Configured explicitly, so a pool that cannot start fails ``open`` with the reason
        rather than running silently on threads."""
        settings = self.config.section("dispatch")
        if settings.executor != "processes":
            return
        # Imported here: a coordinator on threads never loads multiprocessing machinery.
        from coordinator_core.engines.processes.engine import install_process_pool

        names = install_process_pool(self, settings)
        logger.info("engines {} run in {} worker processes", ", ".join(names), settings.processes)

    def close(self) -> None:
        """Finish queued work, stop threads, tell plugins, close engines and the store."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._drain(CLOSE_GRACE)
        self._watchdog.stop()
        self.host.broadcast("coordinator_shutdown", coordinator=self)
        for bound in self.dispatcher.engines:
            try:
                bound.close()
            except Exception as exc:
                logger.warning("closing engine {} failed: {}", bound.name, exc)
        deadline = time.monotonic() + CLOSE_SINKS
        self.metrics_sinks.close(deadline - time.monotonic())
        self.audit_sinks.close(deadline - time.monotonic())
        try:
            self.store.close()
        finally:
            self.pipeline.state_locks.close()

    def _drain(self, grace: float) -> None:
        """Executions still running on callers' own threads (``execute``) are cancelled and
        waited for, so no engine is closed under a running execution."""
        active = self.ledger.running()
        if not active:
            return
        logger.warning("closing: cancelling {} execution(s) still running", len(active))
        for entry in active:
            entry.token.cancel(ErrorKind.CANCELLED)
        deadline = time.monotonic() + grace
        while self.ledger.active and time.monotonic() < deadline:
            time.sleep(0.005)

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- executions ------------------------------------------------------------------------
    def execute(self, request: ExecutionRequest) -> ExecutionResult:
        """Run one execution on the calling thread and return its result."""
        _check_request(request)
        pipeline = self.pipeline
        entry = self.ledger.open(request, pipeline.deadline(request), Status.RUNNING)
        return pipeline.run(entry)

    def submit(self, request: ExecutionRequest) -> ExecutionHandle:
        """Queue one execution on the worker pool; return its handle at once."""
        if self._closed:
            raise InvalidRequest("the coordinator is closed")
        _check_request(request)
        entry = self.ledger.open(request, self.pipeline.deadline(request), Status.QUEUED)
        entry.future = Future()
        limit = self.config.core.max_queued
        with self._queue_lock:
            full = self._queued >= limit
            if not full:
                self._queued += 1
        if full:  # back-pressure: refused now, recorded, the handle already holds the result
            if not self.ledger.claim(entry):  # its deadline passed already: the watchdog ends it
                return ExecutionHandle(self, entry.execution_id, entry.future)
            self.pipeline.run(entry, refused=QuotaExceeded(
                f"the coordinator's queue is full: {limit} submitted executions wait for a "
                "worker ([coordinator] max_queued)", source="coordinator"))
            return ExecutionHandle(self, entry.execution_id, entry.future)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.config.core.workers, thread_name_prefix="coordinator-worker"
            )
        self._pool.submit(self._run_queued, entry)
        return ExecutionHandle(self, entry.execution_id, entry.future)

    async def execute_async(self, request: ExecutionRequest) -> ExecutionResult:
        """``execute`` for asyncio callers: runs on the worker pool, awaits the result.
        Cancelling the awaiting task cancels the execution."""
        handle = self.submit(request)
        try:
            return await asyncio.wrap_future(handle.future)
        except asyncio.CancelledError:
            self.cancel(handle.execution_id)
            raise

    def _run_queued(self, entry: Entry) -> None:
        with self._queue_lock:
            self._queued -= 1
        if not self.ledger.claim(entry):
            return
        try:
            self.pipeline.run(entry)
        except BaseException as exc:  # never leave a handle waiting forever
            future = entry.future
            if future is not None and not future.done():
                future.set_exception(exc)
            raise

    def status(self, execution_id: str) -> ExecutionStatus:
        """Status of an execution: live (queued, running) or final (ledger, then the log)."""
        entry = self.ledger.get(execution_id)
        if entry is not None and entry.result is None:
            return ExecutionStatus(
                execution_id, entry.status, entry.request.resource_id, entry.request.caller
            )
        outcome = self.ledger.outcome(execution_id)
        if outcome is not None:
            return ExecutionStatus(execution_id, *outcome)
        record = self.store.execution(execution_id)
        if record is None:
            raise NotFound(f"no execution with id {execution_id!r}")
        return ExecutionStatus(
            execution_id,
            Status(record.status),
            record.resource_id,
            record.caller,
            record.error_kind,
            record.message,
            record.fee_used,
            record.duration,
            source="log",
        )

    def cancel(self, execution_id: str) -> bool:
        """Cancel a queued or running execution; False if it already finished."""
        entry = self.ledger.get(execution_id)
        if entry is None:
            if self.ledger.outcome(execution_id) or self.store.execution(execution_id):
                return False
            raise NotFound(f"no execution with id {execution_id!r}")
        if entry.status.final:
            return False
        cancelled = entry.token.cancel(ErrorKind.CANCELLED)
        self._finish_unstarted(entry)
        return cancelled

    def _finish_unstarted(self, entry: Entry) -> None:
        """A queued execution whose token was cancelled (by ``cancel`` or its deadline) is
        finished now on this thread, not when a worker gets to it."""
        if self.ledger.claim_unstarted(entry):
            self.pipeline.run(entry)  # sees the cancelled token: records and closes it

    def metrics(self) -> dict[str, Any]:
        """A structured snapshot: counts, latencies, throughput, engines, quota, fee."""
        snapshot: dict[str, Any] = self._collector.snapshot() if self._collector else {}
        snapshot["engines"] = self.dispatcher.utilisation()
        snapshot["quota"] = self.quota.snapshot()
        snapshot["active"] = len(self.ledger.active)
        return snapshot

    def plugins(self) -> list[dict[str, Any]]:
        """What loaded, from where, and what failed."""
        return self.host.describe()


def _check_request(request: Any) -> None:
    """Calling with something that is no request is a programming error, raised at once
    (every malformed *field* of a request ends as an ``invalid_request`` result instead)."""
    if not isinstance(request, ExecutionRequest):
        raise InvalidRequest(f"expected an ExecutionRequest, got {type(request).__name__}")
