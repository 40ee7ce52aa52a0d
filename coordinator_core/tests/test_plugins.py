"""Plugin discovery and registration: conflicts are loud, broken plugins are skipped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from loguru import logger

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.plugin_host.host import PluginError, PluginHost
from coordinator_core.testing import EchoEngine, EchoPlugin
from coordinator_hookspecs import (
    EngineRecord,
    MetricsSinkRecord,
    ValidatorRecord,
    Verdict,
    hookimpl,
)

Make = Callable[..., Coordinator]


def test_duplicate_record_names_are_refused_naming_both(make_coordinator: Make) -> None:
    with pytest.raises(PluginError, match="duplicate engine name 'echo'.*first.*second"):
        make_coordinator(_Named("first", EchoPlugin()), _Named("second", EchoPlugin()))


class _Named:
    """Give an inline plugin object a name (as an entry point would)."""

    def __init__(self, name: str, plugin: Any) -> None:
        self.__name__ = name
        self._plugin = plugin

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return self._plugin.coordinator_register_engines(config)


def test_registration_hook_that_raises_drops_only_that_plugin(make_coordinator: Make) -> None:
    class Broken:
        __name__ = "broken"

        @hookimpl
        def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
            raise RuntimeError("boom")

    messages: list[str] = []
    handler = logger.add(messages.append, level="WARNING", format="{message}")
    try:
        coord = make_coordinator(EchoPlugin(), Broken())
    finally:
        logger.remove(handler)
    rid = coord.deploy(b"x", "echo")
    assert coord.execute(ExecutionRequest(resource_id=rid)).ok
    assert any("broken" in m and "boom" in m for m in messages)
    info = {p["name"]: p for p in coord.plugins()}
    assert info["broken"]["status"] == "failed" and "boom" in info["broken"]["error"]


def test_strict_mode_raises_on_a_broken_plugin(make_coordinator: Make) -> None:
    class Broken:
        __name__ = "broken"

        @hookimpl
        def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
            raise RuntimeError("boom")

    with pytest.raises(PluginError, match="broken.*boom"):
        make_coordinator(
            EchoPlugin(), Broken(), overrides={"coordinator": {"strict_plugins": True}}
        )


def test_wrong_record_type_and_missing_protocol_methods_are_refused(make_coordinator: Make) -> None:
    class Wrong:
        __name__ = "wrong"

        @hookimpl
        def coordinator_register_metrics_sinks(self, config: Any) -> list[Any]:
            return [MetricsSinkRecord(name="no-record-method", sink=object())]

    coord = make_coordinator(EchoPlugin(), Wrong())
    info = {p["name"]: p for p in coord.plugins()}
    assert info["wrong"]["status"] == "failed" and "lacks record" in info["wrong"]["error"]


def test_misspelled_hook_is_refused() -> None:
    class Typo:
        @hookimpl
        def coordinator_register_engine(self, config: Any) -> list[Any]:
            return []

    host = PluginHost()
    with pytest.raises(Exception, match="coordinator_register_engine"):
        host.load_inline([Typo()])


def test_records_can_be_disabled_and_reordered(make_coordinator: Make) -> None:
    order: list[str] = []

    def validator(name: str) -> Any:
        class V:
            def validate_execution(self, request: Any, resource: Any) -> Verdict | None:
                order.append(name)
                return Verdict.reject(name) if name == "deny-all" else None

        return V()

    class Plugin:
        @hookimpl
        def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
            return [
                ValidatorRecord(name="first", validator=validator("first"), priority=1),
                ValidatorRecord(name="second", validator=validator("second"), priority=2),
                ValidatorRecord(name="deny-all", validator=validator("deny-all"), priority=3),
            ]

    coord = make_coordinator(
        EchoPlugin(),
        Plugin(),
        overrides={"records": {"deny-all": {"enabled": False}, "second": {"order": 0}}},
    )
    rid = coord.deploy(b"x", "echo")
    assert coord.execute(ExecutionRequest(resource_id=rid)).ok
    assert order == ["second", "first"]


def test_disable_plugins_by_name(make_coordinator: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_DISABLE_PLUGINS", "metrics_collector")
    coord = make_coordinator(EchoPlugin())
    info = {p["name"]: p for p in coord.plugins()}
    assert info["metrics_collector"]["status"] == "disabled"
    assert "executions" not in coord.metrics()


def test_no_engine_for_a_type_lists_what_is_installed(make_coordinator: Make) -> None:
    from coordinator_hookspecs import EngineError

    coord = make_coordinator(EchoPlugin())
    with pytest.raises(EngineError, match="no engine can run resource type 'wasm'.*echo"):
        coord.deploy(b"\0asm", "wasm")


def test_each_coordinator_has_its_own_plugin_manager(make_coordinator: Make) -> None:
    first = make_coordinator(EchoPlugin())
    second = make_coordinator(EchoPlugin())
    assert first.host.manager is not second.host.manager
    assert isinstance(first.dispatcher.engines[0].engine, EchoEngine)
