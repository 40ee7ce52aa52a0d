"""``coordinator demo`` (issue 8): the main job, run as a user runs it, in a subprocess."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.helpers import cli_json, run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STATUSES = {"succeeded", "failed", "rejected", "cancelled"}
KINDS = {"security_rejected", "quota_exceeded", "fee_exhausted", "trap", "cancelled"}


def test_demo_runs_a_mixed_workload_and_checks_itself(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    done = run_cli("demo", "--executions", "300", "--json", data_dir=data)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    assert all(check["ok"] for check in summary["checks"]), summary["checks"]

    assert summary["executions"] == 301  # the workload and the one cancelled execution
    assert set(summary["by_status"]) == STATUSES and summary["by_status"]["cancelled"] == 1
    assert set(summary["by_error_kind"]) == KINDS
    assert summary["scenarios"]["hybrid transfer"].keys() == {"approved", "denied by model"}
    assert summary["nested"]["executions"] >= summary["scenarios"]["hybrid transfer"]["approved"]
    assert summary["fee_used"] > 0 and summary["throughput_per_s"] > 0
    assert {"wasmtime", "onnxruntime"} <= set(summary["engines"])
    assert all(e["executions"] > 0 for e in summary["engines"].values())

    rows = {row["operation"]: row for row in summary["spec_targets"]}
    assert set(rows) == {"execution coordination", "security validation", "engine selection",
                         "request dispatch", "result processing"}
    assert all(row["p99_ms"] >= row["p50_ms"] >= 0 for row in rows.values())
    assert {"validation", "security", "quota", "selection", "execution", "commit"} <= set(
        summary["stages"])

    assert sum(summary["balances"]["token"].values()) == 4_000_000  # nothing minted or lost
    assert summary["events"]["token"] and summary["events"]["hybrid"]
    assert summary["audit_verify"]["ok"] and summary["audit_verify"]["count"] > 301
    assert "301/301" in done.stderr  # the progress bar

    # The data directory was kept and is a real store: the CLI verifies it again.
    assert summary["data_dir"] == str(data) and summary["data_dir_kept"]
    code, verified = cli_json("audit", "verify", data_dir=data)
    assert code == 0 and verified["ok"] is True


def test_demo_refuses_bad_arguments_with_exit_2(tmp_path: Path) -> None:
    done = run_cli("demo", "--examples", str(tmp_path / "nowhere"), data_dir=tmp_path / "d")
    assert done.returncode == 2
    assert "risk_model.onnx" in done.stderr and "nowhere" in done.stderr
    done = run_cli("demo", "--executions", "10", data_dir=tmp_path / "d")
    assert done.returncode == 2 and "at least 100" in done.stderr


def test_the_shipped_model_is_what_build_model_builds(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("build_model", EXAMPLES / "build_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build().SerializeToString() == (EXAMPLES / "risk_model.onnx").read_bytes()
