"""The example third-party validator distribution (tests/fixtures/coordinator-example-validator)
is discovered through its ``coordinator`` entry point and enforced.

The distribution is installed the way ``pip install -e`` installs it: its ``src`` directory on
the path plus a ``.dist-info`` whose metadata and ``entry_points.txt`` come from its own
pyproject.toml, into a temporary directory. Discovery then runs through the real
``importlib.metadata`` entry points, with nothing global left behind (and no network: the
full pip build is exercised by tests/test_external_plugin.py).
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import ExecutionRequest, Status

FIXTURE = (Path(__file__).resolve().parents[2] / "tests" / "fixtures"
           / "coordinator-example-validator")


def install_editable(project: Path, site: Path) -> dict[str, Any]:
    """Write the ``.dist-info`` an editable install would, from ``project``'s pyproject."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    dist_info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    lines = []
    for group, points in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in points.items())
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return meta


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    meta = install_editable(FIXTURE, tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(FIXTURE / "src"))
    yield meta
    sys.modules.pop("coordinator_example_validator", None)


def test_the_distribution_declares_its_entry_point() -> None:
    meta = tomllib.loads((FIXTURE / "pyproject.toml").read_text())["project"]
    assert meta["entry-points"]["coordinator"] == {
        "example-validator": "coordinator_example_validator"}
    assert not any(dep.startswith("coordinator-core") for dep in meta["dependencies"])
    assert (FIXTURE / "README.md").is_file()
    assert (FIXTURE / "src" / "coordinator_example_validator" / "__init__.py").is_file()


def test_installed_validator_is_discovered_and_enforced(
        installed: dict[str, Any], make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin(), entry_points=True,
                             overrides={"entry-guard": {"internal_prefixes": ["_", "dbg_"]}})
    plugins = {p["name"]: p for p in coord.plugins()}
    info = plugins["example-validator"]
    assert info["status"] == "loaded" and info["source"] == "entrypoint"
    assert info["distribution"] == "coordinator-example-validator"
    assert info["version"] == installed["version"]
    names = [r.name for r in coord.registry.validators]
    assert "entry-guard" in names
    # It runs after the built-ins (priority 50), as its record says.
    assert names.index("entry-guard") > names.index("security-access")

    rid = coord.deploy(b"a contract with internals", "echo")
    refused = coord.execute(ExecutionRequest(resource_id=rid, entry="dbg_state"))
    assert refused.status is Status.REJECTED and refused.error is not None
    assert refused.error.source == "entry-guard"
    assert coord.execute(ExecutionRequest(resource_id=rid, input=b"fine")).ok
