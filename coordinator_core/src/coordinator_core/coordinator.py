"""ExecutionCoordinator of SPEC.md: the one entry point (DESIGN.md §3).

``Coordinator.open`` discovers plugins, validates config, freezes the registry into the
pipeline and opens the store; afterwards no hook is called until ``close``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from os import PathLike
from typing import Any

import attrs
from loguru import logger

from coordinator_core.builtin.metrics_collector import COLLECTOR_NAME
from coordinator_core.config import Config, load_config
from coordinator_core.dispatcher import Dispatcher
from coordinator_core.ledger import Entry, Ledger
from coordinator_core.pipeline import Pipeline
from coordinator_core.plugins import BUILTIN_PLUGINS, PluginHost
from coordinator_core.quota import QuotaManager
from coordinator_core.registry import Registry, build_registry, collect_sections
from coordinator_core.security import SecurityIntegrator
from coordinator_core.store import open_store
from coordinator_core.store.base import BoundProcessor, Store
from coordinator_core.watchdog import Watchdog
from coordinator_hookspecs import (
    AccessPolicy,
    AuditRecord,
    CoordinatorError,
    DeployRequest,
    ErrorKind,
    ExecutionRequest,
    ExecutionResult,
    InvalidRequest,
    NotFound,
    ResourceInfo,
    SecurityRejected,
    Status,
)


class ExecutionHandle:
    """What ``submit`` returns: the execution id at once, the result when it is ready."""

    __slots__ = ("_coordinator", "_future", "execution_id")

    def __init__(
        self, coordinator: Coordinator, execution_id: str, future: Future[ExecutionResult]
    ) -> None:
        self._coordinator = coordinator
        self.execution_id = execution_id
        self._future = future

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Block until the execution ends (``TimeoutError`` if ``timeout`` passes first)."""
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> bool:
        return self._coordinator.cancel(self.execution_id)

    @property
    def future(self) -> Future[ExecutionResult]:
        return self._future


@attrs.frozen
class ExecutionStatus:
    """``status(id)``: where an execution is, live from the ledger or from the durable log."""

    execution_id: str
    status: Status
    resource_id: str | None = None
    caller: str | None = None
    error_kind: str | None = None
    message: str | None = None
    fee_used: int = 0
    duration: float = 0.0
    source: str = "ledger"


class Coordinator:
    """The execution coordinator. Use :meth:`open`; close it (or use ``with``)."""

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
        self.pipeline = Pipeline(
            settings=settings,
            store=store,
            ledger=self.ledger,
            dispatcher=self.dispatcher,
            security=self.security,
            quota=self.quota,
            processors=[
                BoundProcessor(r.name, r.processor, r.kinds) for r in registry.effect_processors
            ],
            metrics_sinks=[(r.name, r.sink) for r in registry.metrics_sinks],
            audit_sinks=[(r.name, r.sink) for r in registry.audit_sinks],
        )
        for bound in self.dispatcher.engines:
            bind = getattr(bound.engine, "bind_host_functions", None)
            if callable(bind):
                bind(registry.host_functions)
        self._collector = next(
            (r.sink for r in registry.metrics_sinks if r.name == COLLECTOR_NAME), None
        )
        self._pool: ThreadPoolExecutor | None = None
        self._watchdog = Watchdog(self.ledger)
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
        builtins: Iterable[str] = BUILTIN_PLUGINS,
    ) -> Coordinator:
        """Load config, discover plugins (built-ins, entry points, then ``plugins`` given
        inline), freeze the pipeline and open the store in the data directory."""
        config = load_config(config_path, data_dir=data_dir, overrides=overrides)
        host = PluginHost(disabled=config.core.disable_plugins, strict=config.core.strict_plugins)
        host.load_builtins(builtins)
        if entry_points:
            host.load_entry_points()
        host.load_inline(plugins)
        unknown = config.bind_sections(collect_sections(host))
        for name in unknown:
            logger.warning(
                "config section [{}] is not declared by any loaded plugin; ignored", name
            )
        host.broadcast("coordinator_configure", config=config)
        registry = build_registry(host, config)
        store = open_store(config)
        try:
            coordinator = cls(config, host, registry, store)
        except Exception:
            store.close()
            raise
        host.broadcast("coordinator_startup", coordinator=coordinator)
        return coordinator

    def close(self) -> None:
        """Finish queued work, stop threads, tell plugins, close engines and the store."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._watchdog.stop()
        self.host.broadcast("coordinator_shutdown", coordinator=self)
        for item in (
            *(b.engine for b in self.dispatcher.engines),
            *(r.sink for r in self.registry.metrics_sinks),
            *(r.sink for r in self.registry.audit_sinks),
        ):
            close = getattr(item, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:
                    logger.warning("closing {} failed: {}", type(item).__name__, exc)
        self.store.close()

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- resources -------------------------------------------------------------------------
    def deploy(
        self,
        code: bytes | str,
        resource_type: str = "wasm",
        *,
        name: str = "",
        capabilities: Iterable[str] = (),
        owner: str = "",
        policy: AccessPolicy | None = None,
        source_format: str = "binary",
    ) -> str:
        """Validate and store a resource; return its content-addressed id (sha256 hex).

        Raises ``InvalidRequest`` (malformed bytes), ``SecurityRejected`` (a deploy validator
        refused) or ``EngineError`` (no engine runs ``resource_type``). Every attempt leaves a
        ``deploy`` audit record. Deploying the same bytes again returns the same id."""
        started = time.perf_counter()
        rid: str | None = None
        try:
            if isinstance(capabilities, str):
                raise InvalidRequest("capabilities must be a list of names, not one string")
            engine = self.dispatcher.engines_for(resource_type)[0].engine
            canonical = getattr(engine, "canonical_code", None)
            if callable(canonical):
                code = canonical(code, source_format)
            if not isinstance(code, bytes):
                raise InvalidRequest(f"code must be bytes, got {type(code).__name__}")
            rid = hashlib.sha256(code).hexdigest()
            deploy = DeployRequest(
                code=code,
                resource_type=resource_type,
                resource_id=rid,
                name=name,
                owner=owner,
                capabilities=frozenset(capabilities),
                policy=policy or AccessPolicy(),
            )
            inspect = getattr(engine, "inspect", None)
            if callable(inspect):
                deploy = attrs.evolve(deploy, meta=dict(inspect(deploy) or {}))
            self.security.check_deploy(deploy)
            info, created = self.store.put_resource(
                ResourceInfo(
                    id=rid,
                    type=resource_type,
                    name=name,
                    owner=owner,
                    capabilities=deploy.capabilities,
                    policy=deploy.policy,
                    size=len(code),
                    deployed_at=time.time(),
                    meta=deploy.meta,
                ),
                code,
            )
        except CoordinatorError as exc:
            self._audit_deploy(rid, owner, resource_type, name, started, exc)
            raise
        self._audit_deploy(rid, owner, resource_type, name, started, None, created)
        return info.id

    def _audit_deploy(
        self,
        rid: str | None,
        owner: str,
        resource_type: str,
        name: str,
        started: float,
        error: CoordinatorError | None,
        created: bool = True,
    ) -> None:
        status = Status.SUCCEEDED if error is None else Status.REJECTED
        record = AuditRecord(
            seq=0,
            record_kind="deploy",
            timestamp=time.time(),
            caller=owner or None,
            resource_id=rid,
            status=status.value,
            error_kind=error.kind.value if error else None,
            message=error.message if error else None,
            duration=time.perf_counter() - started,
            detail={
                "type": resource_type,
                "name": name,
                "created": created,
                **({"source": error.source} if error and error.source else {}),
            },
        )
        self._append_audit(record)

    def _append_audit(self, record: AuditRecord) -> None:
        if self.config.core.enable_audit_tracking:
            record = self.store.append(record)
        if self.config.core.enable_audit_events:
            self.pipeline._emit_audit((record,))

    def resource(self, resource_id: str) -> ResourceInfo:
        """Metadata of a deployed resource (``NotFound`` otherwise)."""
        return self.pipeline.resource(resource_id)

    def resources(self) -> list[ResourceInfo]:
        return self.store.list_resources()

    def set_policy(self, resource_id: str, policy: AccessPolicy, *, caller: str) -> ResourceInfo:
        """Change who may execute a resource; only its owner may."""
        info = self.resource(resource_id)
        if not info.owner or caller != info.owner:
            error = SecurityRejected(
                f"only the owner of resource {resource_id[:12]} may change its policy "
                f"({caller!r} is not its owner)",
                source="policy",
            )
            self._append_audit(
                AuditRecord(
                    seq=0,
                    record_kind="security",
                    timestamp=time.time(),
                    caller=caller,
                    resource_id=resource_id,
                    status=Status.REJECTED.value,
                    error_kind=ErrorKind.SECURITY_REJECTED.value,
                    message=error.message,
                    detail={"action": "set_policy"},
                )
            )
            raise error
        updated = self.store.set_policy(resource_id, policy)
        self.pipeline.forget(resource_id)
        self._append_audit(
            AuditRecord(
                seq=0,
                record_kind="security",
                timestamp=time.time(),
                caller=caller,
                resource_id=resource_id,
                status=Status.SUCCEEDED.value,
                detail={
                    "action": "set_policy",
                    "public": policy.public,
                    "allow": sorted(policy.allow),
                    "deny": sorted(policy.deny),
                },
            )
        )
        return updated

    def state(self, resource_id: str, key: bytes | None = None) -> Any:
        """Committed state of a resource: one value (``key`` given) or all items."""
        if key is None:
            return dict(self.store.state_items(resource_id))
        return self.store.state_get(resource_id, key)

    def events(self, resource_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.events(resource_id, limit)

    def engine_for(self, resource_type: str) -> Any:
        """The first engine able to run ``resource_type`` (CLI input/output helpers)."""
        return self.dispatcher.engines_for(resource_type)[0].engine

    # -- executions ------------------------------------------------------------------------
    def execute(self, request: ExecutionRequest) -> ExecutionResult:
        """Run one execution on the calling thread and return its result."""
        pipeline = self.pipeline
        entry = self.ledger.open(request, pipeline.deadline(request), Status.RUNNING)
        return pipeline.run(entry)

    def submit(self, request: ExecutionRequest) -> ExecutionHandle:
        """Queue one execution on the worker pool; return its handle at once."""
        if self._closed:
            raise InvalidRequest("the coordinator is closed")
        entry = self.ledger.open(request, self.pipeline.deadline(request), Status.QUEUED)
        entry.future = Future()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.config.core.workers, thread_name_prefix="coordinator-worker"
            )
        self._pool.submit(self._run_queued, entry)
        return ExecutionHandle(self, entry.execution_id, entry.future)

    async def execute_async(self, request: ExecutionRequest) -> ExecutionResult:
        """``execute`` for asyncio callers: runs on the worker pool, awaits the result."""
        return await asyncio.wrap_future(self.submit(request).future)

    def _run_queued(self, entry: Entry) -> None:
        if self.ledger.claim(entry):
            self.pipeline.run(entry)

    def status(self, execution_id: str) -> ExecutionStatus:
        """Status of an execution: live (queued, running) or final (ledger, then the log)."""
        entry = self.ledger.get(execution_id)
        if entry is not None:
            result = entry.result
            if result is None:
                return ExecutionStatus(
                    execution_id, entry.status, entry.request.resource_id, entry.request.caller
                )
            return ExecutionStatus(
                execution_id,
                result.status,
                result.resource_id,
                result.caller,
                result.error.kind.value if result.error else None,
                result.error.message if result.error else None,
                result.fee_used,
                result.duration,
            )
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
            if self.store.execution(execution_id) is not None:
                return False
            raise NotFound(f"no execution with id {execution_id!r}")
        if self.ledger.claim_for_cancel(entry):
            entry.token.cancel(ErrorKind.CANCELLED)
            self.pipeline.run(entry)  # sees the cancelled token: records and closes it
            return True
        if entry.status.final:
            return False
        return entry.token.cancel(ErrorKind.CANCELLED)

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
