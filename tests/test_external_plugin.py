"""A plugin distribution written outside the repo, pip-installed, is discovered and enforced.

Builds two throwaway distributions in a temp dir, installs them with pip into the running
environment, and drives the real ``coordinator`` CLI in subprocesses:
- ``coordinator-block-mallory``: a validator that rejects the caller ``mallory``;
- ``coordinator-broken-import``: a plugin whose import raises.
Both are uninstalled afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import cli_json, run_cli

VALIDATOR = '''
"""Rejects one caller: the smallest useful security plugin."""
from coordinator_hookspecs import ValidatorRecord, Verdict, hookimpl


class BlockMallory:
    def validate_execution(self, request, resource):
        if request.caller == "mallory":
            return Verdict.reject("mallory is blocked by policy")
        return None


@hookimpl
def coordinator_register_validators(config):
    return [ValidatorRecord(name="block-mallory", validator=BlockMallory(), priority=5,
                            cacheable=True)]
'''


def _write_dist(root: Path, dist: str, module: str, ep_name: str, source: str) -> Path:
    project = root / dist
    (project / "src").mkdir(parents=True)
    (project / "src" / f"{module}.py").write_text(textwrap.dedent(source))
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [project]
        name = "{dist}"
        version = "0.3.1"
        dependencies = ["coordinator-hookspecs"]

        [project.entry-points.coordinator]
        {ep_name} = "{module}"

        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [tool.setuptools]
        package-dir = {{"" = "src"}}
        py-modules = ["{module}"]
    """)
    )
    return project


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.mktemp("dists")
    good = _write_dist(
        root, "coordinator-block-mallory", "block_mallory", "block-mallory", VALIDATOR
    )
    bad = _write_dist(
        root,
        "coordinator-broken-import",
        "broken_import",
        "broken-import",
        "raise ImportError('this plugin needs a library that is not installed')\n",
    )
    _pip("install", "--no-deps", str(good), str(bad))
    try:
        yield
    finally:
        _pip("uninstall", "-y", "coordinator-block-mallory", "coordinator-broken-import")


def test_installed_plugin_is_listed_with_its_distribution(installed: None, tmp_path: Path) -> None:
    code, data = cli_json("plugins", data_dir=tmp_path)
    assert code == 0
    plugins = {p["name"]: p for p in data["plugins"]}
    good = plugins["block-mallory"]
    assert good["distribution"] == "coordinator-block-mallory" and good["version"] == "0.3.1"
    assert good["status"] == "loaded" and good["source"] == "entrypoint"
    validators = {v["name"]: v for v in data["records"]["validators"]}
    assert validators["block-mallory"]["plugin"] == "block-mallory"
    broken = plugins["broken-import"]
    assert broken["status"] == "failed" and "not installed" in broken["error"]


def test_broken_plugin_is_skipped_with_one_line(installed: None, tmp_path: Path) -> None:
    done = run_cli("plugins", data_dir=tmp_path)
    assert done.returncode == 0
    lines = [line for line in done.stderr.splitlines() if "broken-import" in line]
    assert len(lines) == 1 and "coordinator-broken-import" in lines[0]
    assert "Traceback" not in done.stderr


def test_installed_validator_is_enforced_by_exec(
    installed: None, tmp_path: Path, echo_wat: Path
) -> None:
    code, deployed = cli_json("deploy", str(echo_wat), "--type", "wasm", data_dir=tmp_path)
    assert code == 0, deployed
    rid = deployed["resource_id"]
    code, result = cli_json("exec", rid, "--input", "hi", "--caller", "mallory", data_dir=tmp_path)
    assert code == 1 and result["status"] == "rejected"
    assert result["error"]["kind"] == "security_rejected"
    assert result["error"]["source"] == "block-mallory"
    code, result = cli_json("exec", rid, "--input", "hi", "--caller", "alice", data_dir=tmp_path)
    assert code == 0 and result["status"] == "succeeded" and result["output"] == "hi"
