"""The dashboard's server side over the live server: who may see it (view and admin keys,
by header or by the sign-in cookie), what its API answers, and malformed filters refused."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .conftest import Live, cli
from .dashboard_world import World, world


@pytest.fixture(scope="module")
def viewer(live: Live) -> str:
    """A key with the view scope, made through the CLI while the server runs."""
    made = cli(live.data_dir, "keys", "create", "watcher", "--scope", "view", "--json")
    live.tokens["watcher"] = json.loads(made.stdout)["token"]
    return "watcher"


@pytest.fixture(scope="module")
def hybrid(live: Live) -> World:
    return world(live)


def test_an_unauthenticated_visit_gets_the_sign_in_form(live: Live) -> None:
    page = live.request("GET", "/ui")
    assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Bearer")
    assert 'action="/ui/login"' in page.text and "view or admin scope" in page.text
    api = live.request("GET", "/ui/api/overview")
    assert api.status_code == 401 and api.json()["kind"] == "unauthorized"


def test_an_execute_key_may_not_see_the_dashboard(live: Live) -> None:
    reply = live.request("GET", "/ui/api/overview", "alice")
    assert reply.status_code == 403
    assert "'alice' has scope 'execute'; this needs 'view'" in reply.json()["error"]


def test_sign_in_sets_a_cookie_that_opens_the_page(live: Live, viewer: str) -> None:
    with httpx.Client(base_url=live.url) as browser:  # its own cookie jar
        bad = browser.post("/ui/login", data={"token": "crd_not-a-key"})
        assert bad.status_code == 401 and "not an active key" in bad.text
        refused = browser.post("/ui/login", data={"token": live.tokens["alice"]})
        assert refused.status_code == 403 and "this needs" in refused.text
        assert "coordinator_ui" not in browser.cookies
        signed = browser.post("/ui/login", data={"token": live.tokens[viewer]})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        page = browser.get("/ui")
        assert page.status_code == 200 and 'id="tiles"' in page.text
        assert page.headers["cache-control"] == "no-store"
        assert browser.get("/ui/api/overview").json()["viewer"]["name"] == viewer
        browser.post("/ui/logout")
        assert browser.get("/ui").status_code == 401


def test_a_view_key_sees_but_cannot_mutate(live: Live, viewer: str) -> None:
    overview = live.request("GET", "/ui/api/overview", viewer).json()
    assert overview["viewer"] == {"name": viewer, "scope": "view", "can_verify": False}
    verify = live.request("POST", "/ui/api/audit/verify", viewer)
    assert verify.status_code == 403 and verify.json()["kind"] == "security_rejected"
    for method, path in (("POST", "/v1/executions"), ("POST", "/v1/resources"),
                         ("GET", "/v1/keys"), ("GET", "/v1/audit"), ("GET", "/v2")):
        assert live.request(method, path, viewer).status_code == 403, path


def test_overview_carries_tiles_series_engines_quota_and_the_chain(
        live: Live, hybrid: World) -> None:
    deadline = time.monotonic() + 5  # the figures are at most one sampling period old
    while True:
        overview = live.request("GET", "/ui/api/overview", "root").json()
        tiles = overview["tiles"]
        if tiles["executions"] >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert tiles["executions"] >= 3 and tiles["fee_used"] > 0
    assert {"executions_per_s", "success_rate", "p50_ms", "p99_ms", "inflight",
            "queued"} <= set(tiles)
    assert {e["name"] for e in overview["engines"]} == {"wasmtime", "onnxruntime"}
    assert all(e["healthy"] for e in overview["engines"])
    assert "quota-rate" in overview["quota"]
    audit = overview["audit"]
    assert audit["length"] > 0 and len(audit["head"]) == 64
    time.sleep(1.1)  # one more sample: the series has a point per interval
    series = live.request("GET", "/ui/api/overview", "root").json()["series"]
    assert len(series["t"]) >= 1 and set(series["latency"]) == {"p50_ms", "p90_ms", "p99_ms"}


def test_verify_now_walks_the_chain_and_is_remembered(live: Live) -> None:
    done = live.request("POST", "/ui/api/audit/verify", "root").json()
    assert done["ok"] is True and done["count"] > 0 and done["by"] == "root"
    later = live.request("GET", "/ui/api/overview", "root").json()["audit"]["last_verify"]
    assert later["head"] == done["head"] and later["at"] == done["at"]


def test_filters_narrow_the_listing(live: Live, hybrid: World) -> None:
    every = live.request("GET", "/ui/api/executions", "root").json()["executions"]
    assert {r["caller"] for r in every} >= {"alice", "treasury"}
    mine = live.request("GET", "/ui/api/executions", "root",
                        params={"caller": "treasury"}).json()["executions"]
    assert mine and {r["caller"] for r in mine} == {"treasury"} and len(mine) < len(every)
    by_name = live.request("GET", "/ui/api/executions", "root",
                           params={"resource": "hybrid-dash"}).json()["executions"]
    assert by_name and {r["resource_id"] for r in by_name} == {hybrid.hybrid}
    onnx = live.request("GET", "/ui/api/executions", "root",
                        params={"engine": "onnxruntime", "status": "succeeded"}).json()
    assert onnx["executions"] and all(r["detail"]["engine"] == "onnxruntime"
                                      for r in onnx["executions"])
    future = live.request("GET", "/ui/api/executions", "root",
                          params={"since": str(time.time() + 3600)}).json()
    assert future["executions"] == []


@pytest.mark.parametrize(("params", "says"), [
    ({"status": "done"}, "status='done' is not one of"),
    ({"limit": "0"}, "limit must be an integer from 1 to 500"),
    ({"limit": "many"}, "limit must be an integer"),
    ({"since": "yesterday"}, "since='yesterday' is not a time"),
    ({"until": "nan"}, "until='nan' is not a time"),
    ({"colour": "red"}, "unknown filter 'colour'"),
    ({"caller": "x" * 300}, "the caller filter is over 256 characters"),
])
def test_a_malformed_filter_is_invalid_request(live: Live, params: dict, says: str) -> None:
    reply = live.request("GET", "/ui/api/executions", "root", params=params)
    assert reply.status_code == 400 and reply.json()["kind"] == "invalid_request"
    assert says in reply.json()["error"]


def test_drill_down_has_the_record_parent_and_children(live: Live, hybrid: World) -> None:
    parent = live.request("GET", f"/ui/api/executions/{hybrid.parent_id}", "root").json()
    record = parent["record"]
    assert record["execution_id"] == hybrid.parent_id and record["record_kind"] == "execution"
    assert len(record["leaf_hash"]) == 64 and len(record["chain_hash"]) == 64
    assert parent["request"]["entry"] == "transfer" and parent["request"]["caller"] == "alice"
    assert parent["request"]["resource"]["name"] == "hybrid-dash"
    assert parent["fee_used"] > 0 and parent["error"] is None
    assert parent["effects"] and {e["kind"] for e in parent["effects"]} >= {"state.set"}
    assert parent["events"], "the hybrid transfer emits an event"
    [child] = parent["children"]
    assert child["resource_id"] == hybrid.model and child["parent_id"] == hybrid.parent_id
    nested = live.request("GET", f"/ui/api/executions/{child['execution_id']}", "root").json()
    assert nested["parent"]["execution_id"] == hybrid.parent_id and nested["children"] == []


def test_drill_down_of_an_unknown_execution_is_not_found(live: Live) -> None:
    reply = live.request("GET", "/ui/api/executions/ex-nothing-here", "root")
    assert reply.status_code == 404 and reply.json()["kind"] == "not_found"


def test_the_static_files_are_served_and_nothing_else(live: Live) -> None:
    script = live.request("GET", "/ui/static/uPlot.iife.min.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript") and b"uPlot" in script.content
    assert live.request("GET", "/ui/static/..%2Fkeys.py").status_code == 404
    assert live.request("GET", "/ui/static/index.html").status_code == 404
