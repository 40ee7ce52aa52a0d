"""The ``coordinator`` CLI in real subprocesses: JSON output, exit codes 0/1/2, durable status."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import cli_json, run_cli

STORAGE_WAT = """
(module
  (import "env" "storage_set" (func $set (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "k")
  (func (export "main") (call $set (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1))))
"""


def _deploy(tmp_path: Path, echo_wat: Path) -> str:
    code, data = cli_json(
        "deploy", str(echo_wat), "--type", "wasm", "--name", "echo", data_dir=tmp_path
    )
    assert code == 0, data
    return str(data["resource_id"])


def test_deploy_exec_and_status_from_a_second_process(tmp_path: Path, echo_wat: Path) -> None:
    rid = _deploy(tmp_path, echo_wat)
    assert len(rid) == 64
    code, result = cli_json("exec", rid, "--input", "hello", "--caller", "alice", data_dir=tmp_path)
    assert code == 0 and result["output"] == "hello" and result["fee_used"] > 0
    code, status = cli_json("status", result["execution_id"], data_dir=tmp_path)
    assert code == 0 and status["status"] == "succeeded" and status["source"] == "log"
    assert status["fee_used"] == result["fee_used"] and status["caller"] == "alice"
    plain = run_cli("exec", rid, "--entry", "add", "--args", "[2, 3]", data_dir=tmp_path)
    assert plain.returncode == 0 and "succeeded" in plain.stdout and "[5]" in plain.stdout


def test_deploy_is_idempotent(tmp_path: Path, echo_wat: Path) -> None:
    assert _deploy(tmp_path, echo_wat) == _deploy(tmp_path, echo_wat)


def test_failed_executions_exit_1(tmp_path: Path, echo_wat: Path) -> None:
    code, result = cli_json("exec", "0" * 64, data_dir=tmp_path)
    assert code == 1 and result["status"] == "rejected"
    assert result["error"]["kind"] == "not_found"
    rid = _deploy(tmp_path, echo_wat)
    code, result = cli_json("exec", rid, "--entry", "nope", data_dir=tmp_path)
    assert code == 1 and result["error"]["kind"] == "invalid_request"
    assert "nope" in result["error"]["message"]
    code, status = cli_json("status", "ex-unknown", data_dir=tmp_path)
    assert code == 1 and status["error"]["kind"] == "not_found"


def test_bad_input_exits_2_with_a_message(tmp_path: Path, echo_wat: Path) -> None:
    rid = _deploy(tmp_path, echo_wat)
    done = run_cli("exec", rid, "--args", "[2,", data_dir=tmp_path)
    assert done.returncode == 2 and "--args is not valid JSON" in done.stderr
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm\x01\0\0\0\x01\xff")
    code, data = cli_json("deploy", str(junk), "--type", "wasm", data_dir=tmp_path)
    assert code == 2 and data["error"]["kind"] == "invalid_request"
    done = run_cli("deploy", str(tmp_path / "missing.wasm"), "--type", "wasm", data_dir=tmp_path)
    assert done.returncode == 2 and "cannot read" in done.stderr
    done = run_cli("frobnicate", data_dir=tmp_path)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_ungranted_capability_is_refused_at_deploy(tmp_path: Path) -> None:
    contract = tmp_path / "storage.wat"
    contract.write_text(STORAGE_WAT)
    code, data = cli_json("deploy", str(contract), "--type", "wasm", data_dir=tmp_path)
    assert code == 1 and data["error"]["kind"] == "security_rejected"
    assert "storage" in data["error"]["message"]
    code, data = cli_json(
        "deploy", str(contract), "--type", "wasm", "--grant", "storage", data_dir=tmp_path
    )
    assert code == 0
    code, result = cli_json("exec", data["resource_id"], data_dir=tmp_path)
    assert code == 0 and result["effects"][0]["kind"] == "state.set"


def test_config_show_and_bad_config(tmp_path: Path) -> None:
    code, data = cli_json("config", "show", data_dir=tmp_path)
    assert code == 0 and data["data_dir"] == str(tmp_path)
    assert data["coordinator"]["default_fee_limit"] == 10_000_000
    assert {"store", "dispatch", "wasmtime"} <= set(data)
    bad = tmp_path / "bad.toml"
    bad.write_text("[coordinator]\ndefault_fee_limt = 5\n")
    done = run_cli("--config", str(bad), "config", "show", data_dir=tmp_path)
    assert done.returncode == 2 and "default_fee_limt" in done.stderr
    done = run_cli("config", "show", data_dir=tmp_path, env={"COORDINATOR_WORKERS": "zero"})
    assert done.returncode == 2 and "workers" in done.stderr


def test_metrics_from_the_audit_log(tmp_path: Path, echo_wat: Path) -> None:
    rid = _deploy(tmp_path, echo_wat)
    for text in ("a", "b", "c"):
        run_cli("exec", rid, "--input", text, data_dir=tmp_path)
    run_cli("exec", rid, "--entry", "nope", data_dir=tmp_path)
    code, snapshot = cli_json("metrics", data_dir=tmp_path)
    assert code == 0 and snapshot["executions"] == 4
    assert snapshot["by_status"] == {"succeeded": 3, "rejected": 1}
    assert snapshot["by_engine"] == {"wasmtime": 4}
    table = run_cli("metrics", data_dir=tmp_path)
    assert "success rate   75.00 %" in table.stdout and "end to end" in table.stdout


def test_global_options_before_or_after_the_command(tmp_path: Path, echo_wat: Path) -> None:
    rid = _deploy(tmp_path, echo_wat)
    done = run_cli("exec", rid, "--data-dir", str(tmp_path), "--input", "x", "-q", data_dir=None)
    assert done.returncode == 0 and done.stderr == ""
