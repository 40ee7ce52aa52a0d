"""The contract API over the live server: a WebAssembly contract deployed, executed, polled,
cancelled and its state read, with the key's name as owner and caller."""

from __future__ import annotations

import base64
import struct
import time
from pathlib import Path

from .conftest import Live

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SPIN = b'(module (func (export "main") (loop $l (br $l))))'


def deploy_wat(live: Live, key: str, code: bytes, **params: str) -> dict:
    reply = live.request("POST", "/v1/resources", key, content=code,
                         params={"type": "wasm", "format": "wat", **params})
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_deploy_execute_and_read_state(live: Live) -> None:
    info = deploy_wat(live, "dora", (EXAMPLES / "counter.wat").read_bytes(), name="counter",
                      capabilities="storage")
    assert info["owner"] == "dora" and info["capabilities"] == ["storage"]
    rid = info["resource_id"]
    listed = live.request("GET", "/v1/resources", "alice").json()["resources"]
    assert rid in {r["resource_id"] for r in listed}
    shown = live.request("GET", f"/v1/resources/{rid}", "alice").json()
    assert shown["name"] == "counter" and "meta" in shown
    absent = live.request("GET", f"/v1/resources/{rid}/state/count", "alice")
    assert absent.status_code == 404 and "no state under 'count'" in absent.json()["error"]
    done = live.request("POST", "/v1/executions", "alice", json={"resource_id": rid})
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["status"] == "succeeded" and result["caller"] == "alice"
    assert struct.unpack("<q", base64.b64decode(result["output_base64"]))[0] == 1
    # the resource use: the counter's one page of linear memory, its engine call's CPU time
    assert result["memory_bytes"] == 65536
    assert result["usage"] == {"memory_pages": 1, "memory_peak_pages": 1}
    assert 0 < result["cpu_seconds"] <= result["duration_ms"] / 1e3
    # wait=false: 202 with the id at once, then the result by long poll.
    queued = live.request("POST", "/v1/executions", "alice", params={"wait": "false"},
                          json={"resource_id": rid})
    assert queued.status_code == 202
    polled = live.request("GET", f"/v1/executions/{queued.json()['execution_id']}", "alice",
                          params={"wait": "10"}).json()
    assert polled["status"] == "succeeded" and polled["memory_bytes"] == 65536
    state = live.request("GET", f"/v1/resources/{rid}/state/count", "alice").json()
    assert struct.unpack("<q", base64.b64decode(state["value"]))[0] == 2


def test_a_running_execution_is_cancelled_by_its_caller_only(live: Live) -> None:
    rid = deploy_wat(live, "dora", SPIN, name="spin")["resource_id"]
    started = live.request("POST", "/v1/executions", "alice", params={"wait": "false"},
                           json={"resource_id": rid, "timeout": 30,
                                 "fee_limit": 10**12})
    execution_id = started.json()["execution_id"]
    deadline = time.monotonic() + 10
    while live.request("GET", f"/v1/executions/{execution_id}", "alice").json()[
            "status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live.request("GET", f"/v1/executions/{execution_id}", "alice").json()[
        "status"] == "running"
    other = live.request("POST", f"/v1/executions/{execution_id}/cancel", "dora")
    assert other.status_code == 403 and "not the key 'dora'" in other.json()["error"]
    assert live.request("GET", f"/v1/executions/{execution_id}", "dora").status_code == 403
    assert live.request("GET", f"/v1/executions/{execution_id}", "root").status_code == 200
    cancelled = live.request("POST", f"/v1/executions/{execution_id}/cancel", "alice")
    assert cancelled.json() == {"execution_id": execution_id, "cancelled": True}
    final = live.request("GET", f"/v1/executions/{execution_id}", "alice",
                         params={"wait": "10"}).json()
    assert final["status"] == "cancelled" and final["error_kind"] == "cancelled"


def test_bad_contract_requests(live: Live) -> None:
    no_type = live.request("POST", "/v1/resources", "dora", content=SPIN)
    assert no_type.status_code == 400 and "type" in no_type.json()["error"]
    bad = live.request("POST", "/v1/resources", "dora", content=b"(module",
                       params={"type": "wasm", "format": "wat"})
    assert bad.status_code == 400
    unknown = live.request("POST", "/v1/executions", "alice", json={"resource_id": "0" * 64})
    assert unknown.status_code == 404 and unknown.json()["error_kind"] == "not_found"
    spin = deploy_wat(live, "dora", SPIN, name="spin")["resource_id"]
    out_of_fee = live.request("POST", "/v1/executions", "alice",
                              json={"resource_id": spin, "fee_limit": 1000})
    assert out_of_fee.status_code == 402 and out_of_fee.json()["error_kind"] == "fee_exhausted"
    extra = live.request("POST", "/v1/executions", "alice",
                         json={"resource_id": "0" * 64, "gas": 1})
    assert extra.status_code == 400 and "unknown field 'gas'" in extra.json()["error"]
    b64 = live.request("POST", "/v1/executions", "alice",
                       json={"resource_id": "0" * 64, "input": "not base64!"})
    assert b64.status_code == 400 and "base64" in b64.json()["error"]
    assert live.request("GET", "/v1/executions/ex-none", "alice").status_code == 404
    assert live.request("GET", "/v1/executions/ex-none", "alice",
                        params={"wait": "-1"}).status_code == 400


def test_audit_log_paged_and_verified_by_admin_only(live: Live) -> None:
    live.request("POST", "/v2/models/clf/infer", "alice", json={"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]})
    assert live.request("GET", "/v1/audit", "dora").status_code == 403
    first = live.request("GET", "/v1/audit", "root", params={"limit": "2"}).json()
    assert [r["seq"] for r in first["records"]] == [1, 2] and first["next_start"] == 3
    seen, start = [], 1
    while start is not None:
        page = live.request("GET", "/v1/audit", "root",
                            params={"start": str(start), "limit": "50"}).json()
        seen += page["records"]
        start = page["next_start"]
    assert [r["seq"] for r in seen] == list(range(1, len(seen) + 1))
    assert any(r["record_kind"] == "execution" and r["caller"] == "alice" for r in seen)
    assert {r["record_kind"] for r in seen} >= {"deploy", "execution"}
    report = live.request("GET", "/v1/audit/verify", "root").json()
    assert report["ok"] is True and report["count"] == len(seen)
    assert live.request("GET", "/v1/audit", "root", params={"limit": "0"}).status_code == 400


def test_the_key_is_the_caller_the_contract_sees(live: Live) -> None:
    """The token contract lets only the caller "treasury" mint: the key named so may, another
    key may not, and the mint's event and balance are read back over the API."""
    code = (EXAMPLES / "token.wat").read_bytes()
    rid = deploy_wat(live, "dora", code, name="token", capabilities="storage,events")[
        "resource_id"]
    mint = {"resource_id": rid, "entry": "mint",
            "input": base64.b64encode(struct.pack("<Q", 100) + b"alice").decode()}
    refused = live.request("POST", "/v1/executions", "alice", json=mint)
    assert refused.status_code >= 400 and refused.json()["status"] != "succeeded"
    minted = live.request("POST", "/v1/executions", "treasury", json=mint)
    assert minted.status_code == 200, minted.text
    balance = live.request("GET", f"/v1/resources/{rid}/state/bal:alice", "alice").json()
    assert struct.unpack("<Q", base64.b64decode(balance["value"]))[0] == 100
    [event] = live.request("GET", f"/v1/resources/{rid}/events", "alice").json()["events"]
    assert base64.b64decode(event["payload"])[:1] == b"M"
    assert event["execution_id"] == minted.json()["execution_id"]


def test_prometheus_metrics_on_the_same_port(live: Live) -> None:
    live.request("POST", "/v2/models/clf/infer", "alice", json={"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]})
    assert live.request("GET", "/metrics", "alice").status_code == 403
    reply = live.request("GET", "/metrics", "root")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    succeeded = [float(line.rsplit(" ", 1)[1]) for line in reply.text.splitlines()
                 if line.startswith("coordinator_executions_total{")
                 and 'status="succeeded"' in line and 'resource_type="onnx"' in line]
    assert succeeded and sum(succeeded) >= 1
