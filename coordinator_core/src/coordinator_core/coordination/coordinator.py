"""ExecutionCoordinator of SPEC.md: the one entry point (DESIGN.md §3).

``Coordinator.open`` discovers plugins, validates config, freezes the registry into the
pipeline and opens the store; afterwards no hook is called until ``close``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path
from typing import Any

from coordinator_core.coordination.dry_runs import DryRunCoordinator
from coordinator_core.coordination.executions import ExecutionCoordinator
from coordinator_core.coordination.resources import ResourceCoordinator
from coordinator_core.coordination.roots import RootsCoordinator
from coordinator_core.engines.dispatcher import Dispatcher
from coordinator_core.execution.ledger import Ledger
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
from coordinator_core.store import MEMORY, open_store, store_settings
from coordinator_core.store.base import BoundProcessor, Store
from coordinator_hookspecs import (
    EngineRecipe,
    ErrorKind,
    InvalidRequest,
    RemoteEngines,
)

#: Seconds ``close`` waits for executions it cancelled to end.
CLOSE_GRACE = 5.0
#: Seconds ``close`` waits, in total, for the metrics and audit sinks to close.
CLOSE_SINKS = 5.0


class Coordinator(ExecutionCoordinator, DryRunCoordinator, ResourceCoordinator, RootsCoordinator):
    """The execution coordinator. Use :meth:`open`; close it (or use ``with``).

    Deploy and resource methods come from :class:`ResourceCoordinator`; ``query`` and
    ``simulate`` from :class:`DryRunCoordinator`; state roots, proofs and snapshots from
    :class:`RootsCoordinator`."""

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
        #: the effect processors, bound (worker processes' commits run through them here)
        self.pipeline_processors = tuple(
            BoundProcessor.of(r.name, r.processor, r.kinds) for r in registry.effect_processors
        )
        self.pipeline = Pipeline(
            settings=settings,
            store=store,
            ledger=self.ledger,
            dispatcher=self.dispatcher,
            security=self.security,
            quota=self.quota,
            processors=self.pipeline_processors,
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
        self._workers: Any = None  # WorkerProcesses, with [coordinator] processes
        self._writer_listener: Any = None  # WriterListener, with [coordinator] writer = serve
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
            store = _open_store(config)
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
            coordinator._start_workers()
            coordinator._serve_writer()
            host.broadcast("coordinator_startup", coordinator=coordinator)
        except BaseException:
            coordinator.close()
            raise
        return coordinator

    def _start_process_pool(self) -> None:
        """Install the executor ``[dispatch] executor`` names (``engines/executors.py``):
        ``processes`` moves engines into worker processes, a plugin's into its own.

        Configured explicitly, so an executor that cannot start fails ``open`` with the
        reason rather than running silently on threads."""
        from coordinator_core.engines.executors import install_executor

        settings = self.config.section("dispatch")
        names = install_executor(self)
        if names:
            logger.info("engines {} run on executor {}", ", ".join(names), settings.executor)

    # -- for executor plugins (the contract's ``coordinator_hookspecs.executors``) ----------
    def engine_recipe(self, engines: tuple[str, ...]) -> EngineRecipe:
        """The picklable recipe that rebuilds this coordinator's engines ``engines`` (its
        plugins and effective config) in another process."""
        from coordinator_core.engines.processes.spec import spec_from

        return spec_from(self, engines)

    def run_engines_on(self, engines: tuple[str, ...], backend: RemoteEngines, *,
                       capacity: int, executor: str) -> None:
        """Swap each engine of ``engines`` in the dispatcher for a stand-in that runs it on
        ``backend``; deploy-time methods stay on this process's own instance."""
        from coordinator_core.engines.processes.engine import PooledEngine

        for name in engines:
            inner = self.dispatcher.engine(name).engine
            self.dispatcher.replace_engine(name, PooledEngine(name, inner, backend),
                                           capacity=capacity, executor=executor)

    def _start_workers(self) -> None:
        """``[coordinator] processes = N``: run the pipeline in N worker processes
        (``workers/pool.py``)."""
        count = self.config.core.processes
        if not count:
            return
        if str(self.config.data_dir) == MEMORY:
            raise InvalidRequest("[coordinator] processes needs an on-disk data directory "
                                 "(worker processes share it), not the in-memory store")
        if self.config.core.writer == "connect":
            raise InvalidRequest("[coordinator] processes needs this coordinator to own the "
                                 "writer, not writer = \"connect\": its worker processes "
                                 "commit through it")
        executor = self.config.section("dispatch").executor
        if executor != "threads":
            raise InvalidRequest(f"[coordinator] processes and [dispatch] executor = "
                                 f"{executor!r} exclude each other: worker processes hold "
                                 "their engines already")
        from coordinator_core.workers.pool import WorkerProcesses

        self._workers = WorkerProcesses(self, count)
        logger.info("the pipeline runs in {} worker processes", count)

    def _serve_writer(self) -> None:
        if self.config.core.writer == "serve":
            self.serve_writer()

    def serve_writer(self) -> None:
        """Commit for other processes on this data directory too, from now until ``close``
        (what ``[coordinator] writer = "serve"`` does at open; ``workers/writer.py``): a
        process opened with ``writer = "connect"`` then writes through this one."""
        if self._writer_listener is not None:
            return
        if self.config.core.writer == "connect" or str(self.config.data_dir) == MEMORY:
            raise InvalidRequest("only a coordinator that writes its own on-disk data "
                                 "directory can serve its writer")
        from coordinator_core.workers.writer import CommitService, WriterListener

        self._writer_listener = WriterListener(Path(self.config.data_dir), CommitService(
            self.store, self.pipeline_processors, self.audit_sinks,
            self.config.core.enable_audit_events and bool(self.audit_sinks)))

    def close(self) -> None:
        """Finish queued work, stop threads, tell plugins, close engines and the store."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._workers is not None:
            self._workers.close(CLOSE_GRACE)
        if self._writer_listener is not None:
            self._writer_listener.close()
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

    def metrics(self) -> dict[str, Any]:
        """A structured snapshot: counts, latencies, throughput, engines, quota, fee."""
        snapshot: dict[str, Any] = self._collector.snapshot() if self._collector else {}
        snapshot["engines"] = self.dispatcher.utilisation()
        snapshot["quota"] = self.quota.snapshot()
        snapshot["active"] = len(self.ledger.active)
        snapshot["dry_runs"] = self.pipeline.dry_runs.snapshot()
        if self._workers is not None:
            snapshot["workers"] = self._workers.snapshot()
        return snapshot

    def plugins(self) -> list[dict[str, Any]]:
        """What loaded, from where, and what failed."""
        return self.host.describe()


def _open_store(config: Config) -> Store:
    """The store of ``config``: its own, or one writing through the writer socket of the
    coordinator serving the data directory (``[coordinator] writer = "connect"``)."""
    writer = config.core.writer
    if writer != "own" and str(config.data_dir) == MEMORY:
        raise InvalidRequest(f"[coordinator] writer = {writer!r} needs an on-disk data "
                             "directory, not the in-memory store")
    if writer == "connect":
        from coordinator_core.workers.remote_store import connected_store

        return connected_store(config.data_dir, store_settings(config))
    return open_store(config)
