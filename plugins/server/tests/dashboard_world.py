"""What the dashboard tests look at: a hybrid contract calling a model on the live server,
deployed and funded through the API, made once per session whichever test asks first."""

from __future__ import annotations

import base64
import functools
import struct
from typing import Any

import attrs

from .conftest import Live
from .test_contract import EXAMPLES, deploy_wat


@attrs.frozen
class World:
    """The hybrid contract, its model, and one hybrid execution (with one nested child)."""

    hybrid: str
    model: str
    parent_id: str


def execute(live: Live, key: str, rid: str, entry: str, data: bytes = b"") -> dict[str, Any]:
    reply = live.request("POST", "/v1/executions", key, json={
        "resource_id": rid, "entry": entry, "input": base64.b64encode(data).decode("ascii")})
    assert reply.status_code in (200, 402, 403, 422, 429), reply.text
    return dict(reply.json())


@functools.cache
def _world(live: Live) -> World:
    model = live.request("POST", "/v1/resources", "dora",
                         content=(EXAMPLES / "risk_model.onnx").read_bytes(),
                         params={"type": "onnx", "name": "risk-dash"})
    assert model.status_code == 201, model.text
    model_id = model.json()["resource_id"]
    hybrid = deploy_wat(live, "dora", (EXAMPLES / "hybrid.wat").read_bytes(),
                        name="hybrid-dash", capabilities="storage,events,models")["resource_id"]
    assert execute(live, "treasury", hybrid, "configure", model_id.encode())["status"] == \
        "succeeded"
    assert execute(live, "treasury", hybrid, "mint",
                   struct.pack("<Q", 100_000) + b"alice")["status"] == "succeeded"
    # wait=false: the server then holds the result, effects included, for the drill-down
    queued = live.request("POST", "/v1/executions", "alice", params={"wait": "false"}, json={
        "resource_id": hybrid, "entry": "transfer",
        "input": base64.b64encode(struct.pack("<Q", 5) + b"treasury").decode("ascii")})
    assert queued.status_code == 202, queued.text
    done = live.request("GET", f"/v1/executions/{queued.json()['execution_id']}", "alice",
                        params={"wait": "30"}).json()
    assert done["status"] == "succeeded", done
    return World(hybrid, model_id, done["execution_id"])


def world(live: Live) -> World:
    return _world(live)
