"""Real packaging: wheels of the contract, the core and the WASM engine, installed (not
editable) into a fresh virtual environment outside the repository, run through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.helpers import ECHO_WAT, run_cli

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = ("hookspecs", "coordinator_core", "plugins/engine-wasmtime")


def _run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("packaging")
    dist = root / "dist"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        str(dist),
        *(str(ROOT / d) for d in DISTRIBUTIONS),
    )
    wheels = sorted(dist.glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == [
        "coordinator_core",
        "coordinator_engine_wasmtime",
        "coordinator_hookspecs",
    ]
    env = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    _run(
        str(python), "-m", "pip", "--disable-pip-version-check", "install", "-q", *map(str, wheels)
    )
    return python


def test_installed_from_wheels_not_editable(fresh_env: Path) -> None:
    where = _run(
        str(fresh_env),
        "-c",
        "import coordinator_core, coordinator_hookspecs, coordinator_engine_wasmtime as w;"
        "print(coordinator_core.__file__); print(w.__file__)",
    )
    for line in where.split():
        assert str(fresh_env.parent.parent) in line and "site-packages" in line
        assert str(ROOT) not in line
    listed = _run(str(fresh_env), "-m", "pip", "list", "--format=json")
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"coordinator-core", "coordinator-hookspecs", "coordinator-engine-wasmtime"} <= names
    assert "onnxruntime" not in names and "prometheus-client" not in names  # core pulls neither


def test_deploy_and_exec_through_the_installed_cli(fresh_env: Path, tmp_path: Path) -> None:
    contract = tmp_path / "echo.wat"
    contract.write_text(ECHO_WAT)
    data = tmp_path / "data"
    deployed = run_cli(
        "deploy", str(contract), "--type", "wasm", "--json", data_dir=data, python=fresh_env
    )
    assert deployed.returncode == 0, deployed.stderr
    rid = json.loads(deployed.stdout)["resource_id"]
    done = run_cli("exec", rid, "--input", "packaged", "--json", data_dir=data, python=fresh_env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["output"] == "packaged"
    added = run_cli(
        "exec",
        rid,
        "--entry",
        "add",
        "--args",
        "[40, 2]",
        "--json",
        data_dir=data,
        python=fresh_env,
    )
    assert json.loads(added.stdout)["output"] == [42]
