"""Keys and scopes on the live server: no key, a bad or revoked key, a missing scope, a body
naming another caller; and ``--no-auth`` refused off loopback."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import COORDINATOR, Live, cli


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer crd_wrong",
                                    "Bearer " + "x" * 5000])
def test_without_a_valid_key_every_route_is_401(live: Live, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in (("GET", "/v2"), ("GET", "/v2/models/clf"),
                         ("POST", "/v2/models/clf/infer"), ("GET", "/v1/resources"),
                         ("POST", "/v1/executions")):
        reply = live.client.request(method, path, headers=headers)
        assert reply.status_code == 401, (method, path, reply.text)
        assert "error" in reply.json() and reply.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_key_gets_401_at_its_next_request(live: Live) -> None:
    assert live.request("GET", "/v1/resources", "gone").status_code == 200
    cli(live.data_dir, "keys", "revoke", "gone")
    reply = live.request("GET", "/v1/resources", "gone")
    assert reply.status_code == 401 and "not an active key" in reply.json()["error"]


def test_a_missing_scope_is_403(live: Live) -> None:
    reply = live.request("POST", "/v1/resources", "alice", content=b"(module)",
                         params={"type": "wasm", "format": "wat"})
    assert reply.status_code == 403
    assert "scope 'execute'; this needs 'deploy'" in reply.json()["error"]


def test_a_body_naming_another_caller_is_refused(live: Live) -> None:
    reply = live.request("POST", "/v1/executions", "alice",
                         json={"resource_id": "0" * 64, "caller": "root"})
    assert reply.status_code == 403 and "may not name another" in reply.json()["error"]


def test_admin_keys_manage_keys_over_http(live: Live) -> None:
    assert live.request("GET", "/v1/keys", "dora").status_code == 403
    made = live.request("POST", "/v1/keys", "root", json={"name": "web", "scope": "execute"})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert live.client.get("/v1/resources", headers=auth).status_code == 200
    listed = live.request("GET", "/v1/keys", "root").json()["keys"]
    assert {"web", "alice", "root"} <= {k["name"] for k in listed}
    assert token not in str(listed)
    bad = live.request("POST", "/v1/keys", "root", json={"name": "x", "scope": "god"})
    assert bad.status_code == 400 and "unknown scope" in bad.json()["error"]
    assert live.request("DELETE", "/v1/keys/web", "root").json()["active"] is False
    assert live.client.get("/v1/resources", headers=auth).status_code == 401
    assert live.request("DELETE", "/v1/keys/nobody", "root").status_code == 404


def test_no_auth_is_refused_off_loopback(tmp_path: object) -> None:
    done = subprocess.run([COORDINATOR, "--data-dir", str(tmp_path), "serve", "--no-auth",
                           "--host", "0.0.0.0", "--port", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--no-auth is allowed only on a loopback address" in done.stderr


def _security_records_after(live: Live, seq: int) -> list[dict]:
    reply = live.request("GET", "/v1/audit", "root", params={"start": seq + 1, "limit": 1000})
    assert reply.status_code == 200, reply.text
    return [r for r in reply.json()["records"] if r["record_kind"] == "security"]


def _head(live: Live) -> int:
    report = live.request("GET", "/v1/audit/verify", "root").json()
    assert report["ok"], report
    return int(report["count"])


def test_401_and_403_each_leave_a_security_audit_record(live: Live) -> None:
    secret = "crd_not-a-key-" + "s" * 20
    before = _head(live)
    assert live.client.get("/v2/models/clf", headers={
        "Authorization": f"Bearer {secret}"}).status_code == 401
    assert live.client.post("/v1/executions").status_code == 401
    assert live.request("GET", "/v1/audit", "alice").status_code == 403
    records = _security_records_after(live, before)
    assert [(r["caller"], r["status"], r["error_kind"], r["detail"]) for r in records] == [
        ("anonymous", "rejected", "security_rejected",
         {"action": "authenticate", "method": "GET", "route": "/v2/models/clf",
          "scope": "execute", "status": 401}),
        ("anonymous", "rejected", "security_rejected",
         {"action": "authenticate", "method": "POST", "route": "/v1/executions",
          "scope": "execute", "status": 401}),
        ("alice", "rejected", "security_rejected",
         {"action": "authorize", "method": "GET", "route": "/v1/audit", "scope": "admin",
          "status": 403}),
    ]
    assert "not an active key" in records[0]["message"]
    assert "needs 'admin'" in records[2]["message"]
    assert secret not in str(records) and live.tokens["alice"] not in str(records)
    assert _head(live) == before + 3  # chained, and nothing else was written


def test_a_spoofed_caller_leaves_a_security_audit_record(live: Live) -> None:
    before = _head(live)
    reply = live.request("POST", "/v1/executions", "alice",
                         json={"resource_id": "0" * 64, "caller": "treasury"})
    assert reply.status_code == 403
    (record,) = _security_records_after(live, before)
    assert record["caller"] == "alice" and record["detail"]["action"] == "request"
    assert "may not name another ('treasury')" in record["message"]
