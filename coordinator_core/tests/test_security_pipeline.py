"""The built-in validators inside a real coordinator, and the ``policy`` / ``quota status``
CLI commands against a real data directory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from coordinator_core import Coordinator
from coordinator_core.cli import main as cli_main
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import (
    AccessPolicy,
    DeployRequest,
    EngineRecord,
    EngineResult,
    ExecutionContext,
    ExecutionRequest,
    SecurityRejected,
    Status,
    hookimpl,
)


def test_private_resource_and_owner_policy_change(make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin())
    rid = coord.deploy(b"private", "echo", owner="olga",
                       policy=AccessPolicy(public=False, allow=frozenset({"bob"})))
    assert coord.execute(ExecutionRequest(resource_id=rid, caller="bob")).ok
    assert coord.execute(ExecutionRequest(resource_id=rid, caller="olga")).ok
    refused = coord.execute(ExecutionRequest(resource_id=rid, caller="alice"))
    assert refused.status is Status.REJECTED and refused.error is not None
    assert refused.error.kind.value == "security_rejected"
    assert refused.error.source == "security-access"
    assert "'alice'" in refused.error.message and rid in refused.error.message
    record = next(r for r in coord.store.audit_records()
                  if r.execution_id == refused.execution_id)
    assert record.error_kind == "security_rejected" and "'alice'" in (record.message or "")

    with pytest.raises(SecurityRejected):
        coord.set_policy(rid, AccessPolicy(public=True), caller="alice")
    # The cached verdict for (rid, alice) is dropped when the owner changes the policy.
    coord.set_policy(rid, AccessPolicy(public=True, deny=frozenset({"bob"})), caller="olga")
    assert coord.execute(ExecutionRequest(resource_id=rid, caller="alice")).ok
    denied = coord.execute(ExecutionRequest(resource_id=rid, caller="bob"))
    assert denied.error is not None and "deny list" in denied.error.message


def test_blocklist_at_deploy_and_execution(make_coordinator: Any, tmp_path: Path) -> None:
    code = b"soon to be blocked"
    rid = hashlib.sha256(code).hexdigest()
    first = make_coordinator(EchoPlugin(), data_dir=tmp_path / "d")
    assert first.deploy(code, "echo") == rid
    first.close()
    blocked = {"security-blocklist": {"hashes": [rid], "reason": "known bad"}}
    coord = make_coordinator(EchoPlugin(), data_dir=tmp_path / "d", overrides=blocked)
    result = coord.execute(ExecutionRequest(resource_id=rid))
    assert result.error is not None and result.error.source == "security-blocklist"
    assert "known bad" in result.error.message
    fresh = make_coordinator(EchoPlugin(), overrides=blocked)
    with pytest.raises(SecurityRejected, match="blocklisted"):
        fresh.deploy(code, "echo")


def test_request_limits_from_config(make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin(), overrides={
        "security-request": {"max_input_bytes": 100, "max_timeout": 10.0}})
    rid = coord.deploy(b"limits", "echo")
    assert coord.execute(ExecutionRequest(resource_id=rid, input=b"x" * 100)).ok
    big = coord.execute(ExecutionRequest(resource_id=rid, input=b"x" * 101))
    assert big.status is Status.REJECTED and big.error is not None
    assert big.error.kind.value == "invalid_request" and big.error.source == "security-request"
    slow = coord.execute(ExecutionRequest(resource_id=rid, timeout=11.0))
    assert slow.error is not None and "max_timeout" in slow.error.message
    caller = coord.execute(ExecutionRequest(resource_id=rid, caller="no spaces please"))
    assert caller.error is not None and "caller" in caller.error.message


class NeedsEngine:
    """Runs type ``needs``; its ``inspect`` reads the capabilities the code asks for from
    the code itself (``b"needs:models,storage"``), as a WASM engine reads imports."""

    def inspect(self, deploy: DeployRequest) -> dict[str, Any]:
        wanted = deploy.code.partition(b":")[2].decode()
        return {"required_capabilities": [c for c in wanted.split(",") if c]}

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        return EngineResult(output=b"ok", fee_used=1)

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name="needs", engine=self, resource_types={"needs"})]


def test_capability_grants_at_deploy(make_coordinator: Any) -> None:
    coord = make_coordinator(NeedsEngine())
    with pytest.raises(SecurityRejected, match="models") as info:
        coord.deploy(b"needs:models,storage", "needs", capabilities=["storage"])
    assert info.value.source == "security-capabilities"
    rid = coord.deploy(b"needs:models,storage,io", "needs", capabilities=["storage", "models"])
    assert coord.resource(rid).capabilities == {"storage", "models"}
    assert coord.execute(ExecutionRequest(resource_id=rid)).ok


# -- the CLI commands, through the real ``coordinator`` entry function ----------------------
@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() installs the CLI's stderr log handler process-wide; in-process runs keep ours.
    monkeypatch.setattr(cli_main, "setup_logging", lambda verbose, quiet: None)


def run_cli(argv: list[str], data_dir: Path, config: str = "") -> int:
    path = data_dir / "coordinator.toml"
    path.write_text(config)
    return cli_main.main(["--data-dir", str(data_dir), "--config", str(path), *argv])


def test_policy_command_changes_the_policy_for_the_owner_only(
        make_coordinator: Any, tmp_path: Path, capsys: Any) -> None:
    coord = make_coordinator(EchoPlugin(), data_dir=tmp_path / "d")
    rid = coord.deploy(b"cli policy", "echo", owner="olga")
    coord.close()
    capsys.readouterr()
    code = run_cli(["policy", rid, "--private", "--allow", "bob", "carol", "--deny", "eve",
                    "--caller", "olga", "--json"], tmp_path / "d")
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"resource_id": rid, "owner": "olga", "public": False,
                    "allow": ["bob", "carol"], "deny": ["eve"]}
    # Options left out keep their value; a bare --deny empties the list.
    assert run_cli(["policy", rid, "--deny", "--caller", "olga"], tmp_path / "d") == 0
    out = capsys.readouterr().out
    assert "private" in out and "allow: bob, carol" in out and "deny: -" in out
    assert run_cli(["policy", rid, "--public", "--caller", "mallory", "--json"],
                   tmp_path / "d") == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "security_rejected" and "owner" in error["message"]
    with Coordinator.open(data_dir=tmp_path / "d", entry_points=False) as again:
        assert again.resource(rid).policy == AccessPolicy(public=False,
                                                         allow=frozenset({"bob", "carol"}))


def test_quota_status_command(tmp_path: Path, capsys: Any) -> None:
    config = """
[quota-rate]
rate = 5
[quota-rate.callers.alice]
rate = 1
[quota-concurrency]
limit = 2
overall = 8
"""
    assert run_cli(["quota", "status", "alice", "--json"], tmp_path, config) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["caller"] == "alice"
    policies = data["policies"]
    assert policies["quota-rate"]["callers"]["alice"]["rate"] == 1
    assert policies["quota-concurrency"]["callers"]["alice"] == {
        "limit": 2, "running": 0, "queued": 0}
    assert policies["quota-fee"]["callers"]["alice"] == {"unlimited": True}
    assert run_cli(["quota", "status"], tmp_path, config) == 0
    out = capsys.readouterr().out
    assert "quota-rate" in out and "rate=5" in out and "overall: limit=8" in out


def test_a_raising_validator_logs_its_traceback_once(make_coordinator: Any) -> None:
    from loguru import logger

    from coordinator_hookspecs import ErrorKind, ValidatorRecord

    class Broken:
        def validate_execution(self, request: ExecutionRequest, resource: Any) -> None:
            return {}["missing-setting"]  # type: ignore[no-any-return]

    class Plugin:
        @hookimpl
        def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
            return [ValidatorRecord(name="broken-gate", validator=Broken())]

    coord = make_coordinator(EchoPlugin(), Plugin())
    rid = coord.deploy(b"code", "echo")
    records: list[Any] = []
    handler = logger.add(lambda m: records.append(m.record), level="DEBUG", format="{message}")
    try:
        result = coord.execute(ExecutionRequest(resource_id=rid, caller="alice"))
    finally:
        logger.remove(handler)
    assert result.status is Status.REJECTED and result.error is not None
    assert result.error.kind is ErrorKind.SECURITY_REJECTED
    mine = [r for r in records if "broken-gate" in r["message"]]
    assert [r["level"].name for r in mine] == ["DEBUG", "WARNING"]
    debug, warning = mine
    assert debug["exception"] is not None and debug["exception"].type is KeyError
    assert warning["exception"] is None and "\n" not in warning["message"]
    assert warning["message"] == result.error.message
    assert "KeyError: 'missing-setting'" in warning["message"]


def test_record_security_event_appends_a_chained_security_record(make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin())
    refused = SecurityRejected("no valid bearer token", source="server")
    record = coord.record_security_event("anonymous", {"action": "authenticate"}, refused)
    assert record.seq > 0 and record.record_kind == "security"
    assert record.status == "rejected" and record.error_kind == "security_rejected"
    accepted = coord.record_security_event("olga", {"action": "keys.create"})
    assert accepted.status == "succeeded" and accepted.error_kind is None
    logged = [r for r in coord.audit_records() if r.record_kind == "security"]
    assert [(r.caller, r.detail) for r in logged] == [
        ("anonymous", {"action": "authenticate"}), ("olga", {"action": "keys.create"})]
    assert coord.store.verify().ok
