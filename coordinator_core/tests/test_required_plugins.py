"""``[coordinator] required_plugins``: ``open`` fails closed, naming the plugin and why, when
a required plugin is missing, fails to import, is disabled or was dropped."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.plugin_host.host import PluginError
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import ValidatorRecord, hookimpl

Make = Callable[..., Coordinator]

GUARD = '''
from coordinator_hookspecs import ValidatorRecord, Verdict, hookimpl

class Guard:
    def validate_execution(self, request, resource):
        return Verdict.reject("guarded") if request.caller == "mallory" else None

@hookimpl
def coordinator_register_validators(config):
    return [ValidatorRecord(name="guard", validator=Guard())]
'''


Install = Callable[[str, str], None]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(module, source)``: a real distribution ``coordinator-<module>`` whose entry
    point ``<module>`` of group ``coordinator`` is the module ``source`` (a dist-info
    directory on ``sys.path``); the module is forgotten afterwards."""
    modules: list[str] = []

    def install(module: str, source: str) -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"coordinator_{module}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: coordinator-{module}\nVersion: 1.0\n"
        )
        (info / "entry_points.txt").write_text(f"[coordinator]\n{module} = {module}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        modules.append(module)

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def _open(make: Make, *plugins: Any, **core: Any) -> Coordinator:
    return make(EchoPlugin(), *plugins, entry_points=True, overrides={"coordinator": core})


def test_a_loaded_required_plugin_lets_open_succeed_and_enforces(
    make_coordinator: Make, install: Install
) -> None:
    install("guard", GUARD)
    coord = _open(make_coordinator, required_plugins=["guard", "coordinator-guard"])
    rid = coord.deploy(b"x", "echo")
    assert coord.execute(ExecutionRequest(resource_id=rid, caller="mallory")).status == "rejected"


def test_a_missing_required_plugin_fails_open(make_coordinator: Make) -> None:
    with pytest.raises(PluginError, match="required plugin 'entry-guard' is not installed"):
        _open(make_coordinator, required_plugins=["entry-guard"])


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("def broken(:\n", "SyntaxError"),
        ("raise ImportError('needs libfoo')\n", "ImportError: needs libfoo"),
    ],
)
def test_a_required_plugin_that_fails_to_import_fails_open(
    make_coordinator: Make, install: Install, source: str, why: str
) -> None:
    install("guard", source)
    with pytest.raises(PluginError, match=f"'guard' from coordinator-guard failed to load: {why}"):
        _open(make_coordinator, required_plugins=["guard"])


def test_without_required_plugins_a_broken_validator_is_only_skipped(
    make_coordinator: Make, install: Install
) -> None:
    install("guard", "def broken(:\n")
    coord = _open(make_coordinator)
    assert {p["name"]: p["status"] for p in coord.plugins()}["guard"] == "failed"


def test_a_disabled_required_plugin_fails_open(
    make_coordinator: Make, install: Install
) -> None:
    install("guard", GUARD)
    with pytest.raises(PluginError, match="required plugin 'guard' is disabled"):
        _open(make_coordinator, required_plugins=["guard"], disable_plugins=["guard"])


def test_a_required_plugin_dropped_for_a_raising_hook_fails_open(make_coordinator: Make) -> None:
    class Flaky:
        __name__ = "flaky"

        @hookimpl
        def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
            raise RuntimeError("cannot reach the policy server")

    with pytest.raises(PluginError, match="'flaky' failed to load: .*policy server"):
        _open(make_coordinator, Flaky(), required_plugins=["flaky"])


def test_required_plugins_from_the_environment(
    make_coordinator: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COORDINATOR_REQUIRED_PLUGINS", "no-such-plugin")
    with pytest.raises(PluginError, match="'no-such-plugin' is not installed"):
        make_coordinator(EchoPlugin())


def test_a_failed_open_closes_the_engines_it_built(make_coordinator: Make) -> None:
    closed: list[str] = []

    class Closing(EchoPlugin):
        __name__ = "closing"

        @hookimpl
        def coordinator_register_engines(self, config: Any) -> list[Any]:
            (record,) = super().coordinator_register_engines(config)
            record.engine.close = lambda: closed.append(record.name)  # type: ignore[method-assign]
            return [record]

    with pytest.raises(PluginError, match="'absent' is not installed"):
        make_coordinator(Closing(), overrides={"coordinator": {"required_plugins": ["absent"]}})
    assert closed == ["echo"]
