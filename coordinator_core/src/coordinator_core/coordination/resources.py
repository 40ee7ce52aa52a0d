"""ResourceCoordinator of SPEC.md: deploying resources and reading their metadata and state.

Mixed into :class:`~coordinator_core.coordination.coordinator.Coordinator`; it uses the
coordinator's store, dispatcher (to find the engine of a resource type), security integrator
and pipeline.
Every deploy attempt, accepted or refused, leaves a ``deploy`` audit record. It also holds
the two read-only views ``CoordinatorView`` adds to the public API for plugins: the records
registered (``registered``) and the audit log (``audit_records``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from coordinator_core.coordination.options import (
    accepted_options,
    check_options_shape,
    same_options,
)
from coordinator_core.engines.dispatcher import Dispatcher
from coordinator_core.execution.pipeline import Pipeline
from coordinator_core.plugin_host.config import Config
from coordinator_core.plugin_host.registry import KINDS, Registry
from coordinator_core.services.audit.sinks import AuditSinks
from coordinator_core.services.security.integrator import SecurityIntegrator
from coordinator_core.store.base import Store
from coordinator_hookspecs import (
    RECORD_KINDS,
    AccessPolicy,
    AuditRecord,
    CoordinatorError,
    DeployRequest,
    EngineError,
    InvalidRequest,
    ResourceInfo,
    SecurityRejected,
    Status,
)

#: ``registered(kind)``'s kinds (the registry's fields) -> the record attribute holding the
#: implementation.
_TARGET_OF_FIELD = {kind.field: kind.target for kind in KINDS}


class ResourceCoordinator:
    """Deploy, inspect and govern resources."""

    config: Config
    registry: Registry
    store: Store
    dispatcher: Dispatcher
    security: SecurityIntegrator
    pipeline: Pipeline
    audit_sinks: AuditSinks

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
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """Validate and store a resource; return its content-addressed id (sha256 hex).

        ``options`` are per-resource engine settings (an ONNX model's batching, say); the
        engine checks them and they are kept with the resource (``ResourceInfo.options``).
        Raises ``InvalidRequest`` (malformed bytes, an unknown or ill-typed option),
        ``SecurityRejected`` (a deploy validator refused) or ``EngineError`` (no engine runs
        ``resource_type``). Every attempt leaves a ``deploy`` audit record. Deploying the same
        bytes again returns the same id; with other options it is refused, since the id names
        one resource and its options."""
        started = time.perf_counter()
        rid: str | None = None
        try:
            if isinstance(capabilities, str):
                raise InvalidRequest("capabilities must be a list of names, not one string")
            bound = self.dispatcher.engines_for(resource_type)[0]
            code = bound.canonical_code(code, source_format)
            if not isinstance(code, bytes):
                raise InvalidRequest(f"code must be bytes, got {type(code).__name__}")
            rid = hashlib.sha256(code).hexdigest()
            asked = check_options_shape(options)
            deploy = DeployRequest(
                code=code,
                resource_type=resource_type,
                resource_id=rid,
                name=name,
                owner=owner,
                capabilities=frozenset(capabilities),
                policy=policy or AccessPolicy(),
                options=asked,
            )
            meta = bound.inspect(deploy)
            accepted_options(bound.name, asked, meta)
            if meta:
                deploy = attrs.evolve(deploy, meta=dict(meta))
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
            if not created:
                same_options(info, deploy.meta)
        except CoordinatorError as exc:
            self._audit_deploy(rid, owner, resource_type, name, started, exc)
            raise
        except Exception as exc:  # an engine's inspect or canonical_code bug: typed, audited
            error = EngineError(f"deploy failed in the {resource_type} engine: "
                                f"{type(exc).__name__}: {exc}")
            self._audit_deploy(rid, owner, resource_type, name, started, error)
            raise error from exc
        self._audit_deploy(rid, owner, resource_type, name, started, None, created,
                           grants=deploy)
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
        grants: DeployRequest | None = None,
    ) -> None:
        # What the deploy granted, as it was then (a later policy change rewrites the
        # resource's row): ``coordinator replay`` deploys from it.
        granted: dict[str, Any] = {} if grants is None else {
            "capabilities": sorted(grants.capabilities),
            "policy": {"public": grants.policy.public, "allow": sorted(grants.policy.allow),
                       "deny": sorted(grants.policy.deny)},
        }
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
                **granted,
                **({"source": error.source} if error and error.source else {}),
            },
        )
        self._append_audit(record)

    def _append_audit(self, record: AuditRecord) -> AuditRecord:
        if self.config.core.enable_audit_tracking:
            record = self.store.append(record)
        if self.config.core.enable_audit_events:
            self.audit_sinks.emit(record)
        return record

    def resource(self, resource_id: str) -> ResourceInfo:
        """Metadata of a deployed resource (``NotFound`` otherwise)."""
        return self.pipeline.resource(resource_id)

    def resources(self) -> list[ResourceInfo]:
        return self.store.list_resources()

    def set_policy(self, resource_id: str, policy: AccessPolicy, *, caller: str) -> ResourceInfo:
        """Change who may execute a resource; only its owner may. Audited either way."""
        info = self.resource(resource_id)
        detail = {
            "action": "set_policy",
            "public": policy.public,
            "allow": sorted(policy.allow),
            "deny": sorted(policy.deny),
        }
        if not info.owner or caller != info.owner:
            error = SecurityRejected(
                f"only the owner of resource {resource_id[:12]} may change its policy "
                f"({caller!r} is not its owner)",
                source="policy",
            )
            self._audit_policy(resource_id, caller, detail, error)
            raise error
        updated = self.store.set_policy(resource_id, policy)
        self.pipeline.forget(resource_id)
        self._audit_policy(resource_id, caller, detail, None)
        return updated

    def _audit_policy(
        self, resource_id: str, caller: str, detail: dict[str, Any], error: CoordinatorError | None
    ) -> None:
        self.record_security_event(caller, detail, error, resource_id=resource_id)

    def record_security_event(
        self,
        caller: str,
        detail: Mapping[str, Any],
        error: CoordinatorError | None = None,
        *,
        resource_id: str | None = None,
    ) -> AuditRecord:
        """Append a ``security`` audit record for a decision taken outside the pipeline (a
        front end refusing a bad credential, a policy change): ``rejected`` with the error's
        kind and message when ``error`` is given, ``succeeded`` otherwise. ``detail`` must be
        JSON-serialisable; it should say what was attempted (``{"action": ...}``) and never
        hold a secret."""
        record = AuditRecord(
            seq=0,
            record_kind="security",
            timestamp=time.time(),
            caller=caller,
            resource_id=resource_id,
            status=(Status.REJECTED if error else Status.SUCCEEDED).value,
            error_kind=error.kind.value if error else None,
            message=error.message if error else None,
            detail=dict(detail),
        )
        return self._append_audit(record)

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

    # -- what plugins see besides the public API (CoordinatorView) ---------------------------
    def audit_records(self, start: int = 1) -> Iterator[AuditRecord]:
        """The committed audit log from sequence number ``start`` on, oldest first."""
        return self.store.audit_records(start)

    def registered(self, kind: str) -> Mapping[str, Any]:
        """The implementations of the ``kind`` records this coordinator runs with, by name
        (``kind`` is a field of the registry: ``"engines"``, ``"metrics_sinks"``...)."""
        target = _TARGET_OF_FIELD.get(kind)
        if target is None:
            raise InvalidRequest(f"unknown record kind {kind!r}; choose one of "
                                 f"{', '.join(RECORD_KINDS)}")
        return {r.name: getattr(r, target) for r in getattr(self.registry, kind)}
