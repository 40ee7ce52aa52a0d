"""What the core hands plugins: a ``CoordinatorView`` and a ``CoordinatorConfig``, and the
optional methods it binds once at open (an object's own, or the base class's default).
The CLI's default input and output conversions are exercised by ``tests/test_cli.py``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.plugin_host.registry import KINDS
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import (
    RECORD_KINDS,
    CoordinatorConfig,
    CoordinatorView,
    DeployRequest,
    EngineBase,
    EngineRecord,
    EngineResult,
    ExecutionContext,
    InvalidRequest,
    MetricsSinkRecord,
    ValidatorBase,
    ValidatorRecord,
    Verdict,
    hookimpl,
)

Make = Callable[..., Coordinator]


class Seen:
    """A metrics sink that keeps what it saw, and what ``coordinator_startup`` gave it."""

    def __init__(self) -> None:
        self.views: list[Any] = []

    def record(self, report: Any) -> None:
        pass


class ViewPlugin:
    """Registers ``Seen`` and records the arguments of the hooks typed by the contract."""

    def __init__(self) -> None:
        self.sink = Seen()
        self.configs: list[Any] = []
        self.started: list[Any] = []

    @hookimpl
    def coordinator_register_metrics_sinks(self, config: Any) -> list[MetricsSinkRecord]:
        self.configs.append(config)
        return [MetricsSinkRecord(name="seen", sink=self.sink)]

    @hookimpl
    def coordinator_startup(self, coordinator: Any) -> None:
        self.started.append(coordinator)


def test_hooks_receive_the_view_and_config_protocols(make_coordinator: Make) -> None:
    plugin = ViewPlugin()
    coord = make_coordinator(EchoPlugin(), plugin)
    (config,) = plugin.configs
    (view,) = plugin.started
    assert isinstance(config, CoordinatorConfig) and isinstance(view, CoordinatorView)
    assert config.core.max_depth == 2 and config.data_dir == coord.config.data_dir
    assert view.registered("metrics_sinks")["seen"] is plugin.sink
    assert view.registered("engines")["echo"].__class__.__name__ == "EchoEngine"


def test_registered_leaves_out_disabled_records_and_names_unknown_kinds(
    make_coordinator: Make,
) -> None:
    plugin = ViewPlugin()
    coord = make_coordinator(EchoPlugin(), plugin, overrides={"records": {"seen": {
        "enabled": False}}})
    assert "seen" not in coord.registered("metrics_sinks")
    with pytest.raises(InvalidRequest, match="unknown record kind 'sinks'.*metrics_sinks"):
        coord.registered("sinks")


def test_record_kinds_of_the_contract_are_the_registry_fields() -> None:
    assert tuple(kind.field for kind in KINDS) == RECORD_KINDS


def test_audit_records_page_from_a_sequence_number(make_coordinator: Make) -> None:
    coord = make_coordinator(EchoPlugin())
    rid = coord.deploy(b"code", "echo")
    for data in (b"a", b"b"):
        assert coord.execute(ExecutionRequest(resource_id=rid, input=data)).ok
    records = list(coord.audit_records())
    assert [r.record_kind for r in records] == ["deploy", "execution", "execution"]
    assert [r.seq for r in coord.audit_records(records[1].seq)] == [r.seq for r in records[1:]]


class Bare:
    """An engine with ``execute`` only: every optional method comes from the defaults."""

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        return EngineResult(output=ctx.request.input, fee_used=1)


class Based(EngineBase):
    """An engine inheriting ``EngineBase`` and overriding only ``canonical_code``."""

    def canonical_code(self, code: Any, source_format: str = "binary") -> Any:
        return code.upper() if isinstance(code, bytes) else code

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        return EngineResult(output=ctx.request.input, fee_used=1)


class DeployOnly(ValidatorBase):
    """Overrides one check; the inherited ``validate_execution`` must never be walked."""

    def __init__(self) -> None:
        self.deploys = 0

    def validate_deploy(self, deploy: DeployRequest) -> Verdict | None:
        self.deploys += 1
        return None


class Engines:
    def __init__(self) -> None:
        self.validator = DeployOnly()

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name="bare", engine=Bare(), resource_types={"bare"}),
                EngineRecord(name="based", engine=Based(), resource_types={"based"})]

    @hookimpl
    def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
        return [ValidatorRecord(name="deploy-only", validator=self.validator)]


def test_optional_methods_are_bound_once_with_defaults(make_coordinator: Make) -> None:
    plugin = Engines()
    coord = make_coordinator(plugin)
    bare, based = coord.dispatcher.engine("bare"), coord.dispatcher.engine("based")
    # Defaults that would cost selection work count as absent, inherited or missing alike.
    for bound in (bare, based):
        assert bound.health is None and bound.holds is None and bound.pool_stats is None
    assert coord.dispatcher._watched is False
    assert based.canonical_code.__func__ is Based.canonical_code  # type: ignore[attr-defined]
    # A deploy through the engine that lacks every optional method keeps the bytes as given.
    rid = coord.deploy(b"code", "bare")
    assert rid == hashlib.sha256(b"code").hexdigest()
    assert coord.resource(rid).size == 4 and coord.state(rid) == {}
    upper = coord.deploy(b"code", "based")
    assert upper == hashlib.sha256(b"CODE").hexdigest()  # canonical_code ran before hashing
    assert plugin.validator.deploys == 2
    walked = {name for name, *_ in coord.security.execution_validators}
    assert "deploy-only" not in walked and "security-request" in walked
    assert "deploy-only" in {name for name, *_ in coord.security.deploy_validators}
    assert coord.execute(ExecutionRequest(resource_id=rid, input=b"x")).output == b"x"
    assert "workers" not in coord.metrics()["engines"]["bare"]
