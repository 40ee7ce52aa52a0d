"""Config: TOML + environment, unknown keys refused with readable errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
from loguru import logger

from coordinator_core.plugin_host.config import load_config
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import InvalidRequest


def test_defaults_follow_the_spec_fields(tmp_path: Path) -> None:
    config = load_config(environ={}, data_dir=tmp_path)
    core = config.core
    assert core.enable_audit_events and core.enable_audit_tracking
    assert core.enable_quota_management and core.enable_security_validation
    assert core.max_execution_timeout == 30.0 and core.default_fee_limit == 10_000_000
    assert config.data_dir == tmp_path


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[coordinator]\ndefault_fee_limit = 500\nworkers = 3\n[store]\ndurability = "full"\n'
    )
    config = load_config(
        path, environ={"COORDINATOR_WORKERS": "4", "COORDINATOR_STORE__DURABILITY": "normal"}
    )
    assert config.core.default_fee_limit == 500 and config.core.workers == 4
    assert config.raw_sections["store"] == {"durability": "normal"}
    assert config.source == path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[coordinator]\nmax_timeout = 3\n", "max_timeout"),
        ("[coordinator]\nworkers = 'many'\n", "workers"),
        ("[coordinator]\nworkers = -1\n", "workers must be a positive"),
        ("[coordinator]\nmax_execution_timeout = nan\n", "max_execution_timeout must be a pos"),
        ("[coordinator]\nrisk_threshold = nan\n", "risk_threshold must be a finite"),
        ("[coordinator]\nmax_depth = 99\n", "max_depth must be between 0 and 8"),
        ("[coordinator]\nenable_audit_events = 'yes'\n", "enable_audit_events"),
        ("[records.x]\nenabld = false\n", "enabld"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidRequest, match=needle):
        load_config(path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_plugin_sections_refuse_unknown_keys(make_coordinator) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match=r"extra fields.*colour.*\[dispatch\]"):
        make_coordinator(EchoPlugin(), overrides={"dispatch": {"colour": "red"}})
    with pytest.raises(InvalidRequest, match="unknown strategy"):
        make_coordinator(EchoPlugin(), overrides={"dispatch": {"strategy": "fastest"}})


def test_as_dict_shows_every_section(make_coordinator) -> None:  # type: ignore[no-untyped-def]
    coord = make_coordinator(EchoPlugin())
    shown = coord.config.as_dict()
    assert shown["coordinator"]["default_fee_limit"] == 10_000_000
    assert shown["dispatch"]["strategy"] == "least_loaded"
    assert "store" in shown


def test_a_string_where_names_belong_is_a_list_of_names(tmp_path: Path) -> None:
    config = load_config(data_dir=tmp_path, environ={
        "COORDINATOR_STATE_CAPABILITIES": "storage",
        "COORDINATOR_DISABLE_PLUGINS": "a,b"})
    assert config.core.state_capabilities == ("storage",)
    assert config.core.disable_plugins == ("a", "b")


def test_env_variable_reaches_a_section_named_with_an_underscore(
    make_coordinator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``COORDINATOR_AUDIT_JSONL__PATH`` sets ``[audit_jsonl]``: the sink writes there."""
    target = tmp_path / "audit.jsonl"
    monkeypatch.setenv("COORDINATOR_AUDIT_JSONL__PATH", str(target))
    coord = make_coordinator(EchoPlugin())
    assert coord.config.section("audit_jsonl").path == target
    coord.deploy(b"x", "echo")
    assert target.exists() and "deploy" in target.read_text()


def test_env_variable_reaches_a_section_named_with_a_hyphen(tmp_path: Path) -> None:
    @attrs.frozen
    class Guard:
        risk_per_kib: float = 0.0

    config = load_config(environ={"COORDINATOR_ENTRY_GUARD__RISK_PER_KIB": "0.25"},
                         data_dir=tmp_path)
    assert config.bind_sections({"entry-guard": Guard}) == []
    assert config.section("entry-guard").risk_per_kib == 0.25


@pytest.mark.parametrize(
    ("file_text", "environ", "needle"),
    [
        ('[stoer]\ndurability = "full"\n', {}, r"\[stoer\] in .*c.toml .*did you mean \[store\]"),
        ("", {"COORDINATOR_AUDIT_JSNL__PATH": "x"},
         r"\[audit_jsnl\] \(from COORDINATOR_AUDIT_JSNL__PATH\).*did you mean \[audit_jsonl\]"),
    ],
)
def test_a_misspelled_section_is_warned_with_the_closest_name(
    make_coordinator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file_text: str,
    environ: dict[str, str],
    needle: str,
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(file_text)
    monkeypatch.setenv("COORDINATOR_CONFIG", str(path))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    messages: list[str] = []
    handler = logger.add(messages.append, level="WARNING", format="{message}")
    try:
        make_coordinator(EchoPlugin())
    finally:
        logger.remove(handler)
    warned = [m for m in messages if "not declared by any loaded plugin" in m]
    assert len(warned) == 1 and re.search(needle, warned[0]), messages
