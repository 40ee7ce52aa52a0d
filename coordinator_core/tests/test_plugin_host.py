"""The plugin host keeps pluggy's semantics: tryfirst/trylast order, wrappers that run and
may change results, blocked names; and still knows which plugin gave each record."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Generator
from typing import Any

import attrs
import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.plugin_host.registry import KINDS, Registry
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import (
    HostFunctionRecord,
    InvalidRequest,
    ValidatorRecord,
    Verdict,
    hookimpl,
)
from coordinator_hookspecs import spec as hookspecs

Make = Callable[..., Coordinator]


def _host_function(name: str) -> HostFunctionRecord:
    return HostFunctionRecord(name=name, capability="io", func=lambda call: None)


def _plugin(name: str, calls: list[str], **marks: bool) -> Any:
    """A plugin registering one host function and noting when its hooks run."""

    class Plugin:
        __name__ = name

        @hookimpl(**marks)
        def coordinator_register_host_functions(self, config: Any) -> list[HostFunctionRecord]:
            calls.append(name)
            return [_host_function(f"fn_{name}")]

        @hookimpl(**marks)
        def coordinator_configure(self, config: Any) -> None:
            calls.append(f"configure {name}")

    return Plugin()


def test_tryfirst_and_trylast_order_the_calls(make_coordinator: Make) -> None:
    calls: list[str] = []
    coord = make_coordinator(
        EchoPlugin(),
        _plugin("late", calls, trylast=True),
        _plugin("plain", calls),
        _plugin("early", calls, tryfirst=True),
    )
    # pluggy calls tryfirst first and trylast last, whatever the registration order
    assert [c for c in calls if c.startswith("configure")] == [
        "configure early", "configure plain", "configure late"
    ]
    assert [c for c in calls if not c.startswith("configure")] == ["early", "plain", "late"]
    names = [r.name for r in coord.registry.host_functions if r.name.startswith("fn_")]
    assert names == ["fn_early", "fn_plain", "fn_late"]
    assert coord.registry.provider("host function", "fn_early") == "early"


def test_a_wrapper_runs_and_may_change_the_records(make_coordinator: Make) -> None:
    seen: list[list[str]] = []

    class Vetting:
        """Removes the validator named 'deny-all' others register, and adds its own."""

        __name__ = "vetting"

        @hookimpl(wrapper=True)
        def coordinator_register_validators(
            self, config: Any
        ) -> Generator[None, list[list[ValidatorRecord]], list[list[ValidatorRecord]]]:
            results = yield
            seen.append([r.name for records in results for r in records])
            kept = [[r for r in records if r.name != "deny-all"] for records in results]
            return [*kept, [ValidatorRecord(name="vetted", validator=_Allow())]]

    class DenyAll:
        __name__ = "deny"

        @hookimpl
        def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
            return [ValidatorRecord(name="deny-all", validator=_Deny())]

    coord = make_coordinator(EchoPlugin(), DenyAll(), Vetting())
    assert seen and "deny-all" in seen[0]
    names = {r.name for r in coord.registry.validators}
    assert "deny-all" not in names and "vetted" in names
    # a record only a wrapper returned is the wrapper's
    assert coord.registry.provider("validator", "vetted") == "vetting"
    assert coord.registry.provider("validator", "security-request") == "security_request"
    rid = coord.deploy(b"x", "echo")
    assert coord.execute(ExecutionRequest(resource_id=rid)).ok


def test_an_old_style_hookwrapper_runs(make_coordinator: Make) -> None:
    around: list[str] = []

    class Timing:
        __name__ = "timing"

        @hookimpl(hookwrapper=True)
        def coordinator_configure(self, config: Any) -> Generator[None, Any, None]:
            around.append("before")
            outcome = yield
            outcome.get_result()
            around.append("after")

    make_coordinator(EchoPlugin(), Timing(), _plugin("plain", around))
    # around the configure broadcast; the registration hooks come after it
    assert around == ["before", "configure plain", "after", "plain"]


class _Allow:
    def validate_execution(self, request: Any, resource: Any) -> None:
        return None


class _Deny:
    def validate_execution(self, request: Any, resource: Any) -> Verdict:
        return Verdict.reject("denied")


def test_a_raising_plugin_is_dropped_alone_while_the_others_run(make_coordinator: Make) -> None:
    calls: list[str] = []

    class Broken:
        __name__ = "broken"

        @hookimpl(tryfirst=True)
        def coordinator_register_host_functions(self, config: Any) -> list[Any]:
            raise RuntimeError("boom")

    coord = make_coordinator(EchoPlugin(), Broken(), _plugin("plain", calls))
    assert "plain" in calls and "fn_plain" in {r.name for r in coord.registry.host_functions}
    info = {p["name"]: p for p in coord.plugins()}
    assert info["broken"]["status"] == "failed" and "boom" in info["broken"]["error"]


@pytest.mark.parametrize("name", ["core_config", "store_config", "state_processor"])
def test_essential_plugins_cannot_be_disabled(make_coordinator: Make, name: str) -> None:
    with pytest.raises(InvalidRequest, match=f"{name}.*cannot be disabled"):
        make_coordinator(EchoPlugin(), overrides={"coordinator": {"disable_plugins": [name]}})


def test_a_disabled_plugin_is_blocked_in_pluggy(make_coordinator: Make) -> None:
    calls: list[str] = []
    coord = make_coordinator(
        EchoPlugin(),
        _plugin("optional", calls),
        overrides={"coordinator": {"disable_plugins": ["optional", "quota_rate"]}},
    )
    assert calls == []
    assert coord.host.manager.is_blocked("optional") and coord.host.manager.is_blocked("quota_rate")
    info = {p["name"]: p["status"] for p in coord.plugins()}
    assert info["optional"] == "disabled" and info["quota_rate"] == "disabled"
    assert "quota-rate" not in {r.name for r in coord.registry.quota_policies}


def test_every_registry_kind_matches_its_hookspec() -> None:
    """The Registry's fields are the one table: each has a kind, and the hookspec of that
    kind returns lists of the record class the field holds."""
    record_fields = [f.name for f in attrs.fields(Registry) if f.name not in ("providers",
                                                                              "conflicts")]
    assert [k.field for k in KINDS] == record_fields
    for kind in KINDS:
        spec = getattr(hookspecs, kind.hook)
        returned = typing.get_type_hints(spec)["return"]
        assert kind.record in typing.get_args(typing.get_args(returned)[0]), kind.hook
        assert "config" in inspect.signature(spec).parameters
