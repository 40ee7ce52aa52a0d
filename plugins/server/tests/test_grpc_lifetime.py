"""The gRPC port's lifetime: it answers before the coordinator is open (ServerReady false,
keyed calls UNAVAILABLE, ServerReady true once open); a call's deadline ends its execution
too; SIGTERM with a ModelInfer in flight lets it finish and exits 0; and a gRPC port already
in use stops ``coordinator serve`` with exit 1 and the reason.

The readiness check runs in a child process: it imports the server's own generated messages,
which cannot share protobuf's registry with the ``tritonclient.grpc`` the other tests import.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as oip
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from tritonclient.utils import InferenceServerException

from .conftest import COORDINATOR, free_port

READINESS = r"""
import contextlib, json, sys, threading, time, warnings
import grpc
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from coordinator_core.coordination.coordinator import Coordinator
from coordinator_server.app import ServerState
from coordinator_server.grpc import inference_pb2 as pb, inference_pb2_grpc as pb_grpc
from coordinator_server.grpc.server import GrpcFrontEnd
from coordinator_server.serve import build_app

data_dir, port = sys.argv[1], int(sys.argv[2])
gate = threading.Event()

@contextlib.contextmanager
def opener():
    gate.wait(30)
    with Coordinator.open(data_dir=data_dir) as coordinator:
        yield coordinator

state = ServerState()
seen = {}
front = GrpcFrontEnd(state, "127.0.0.1", port, grace=1)
with TestClient(build_app(state, opener, lambda: None, front)):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    seen["live"] = stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    seen["ready_before"] = stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    try:
        stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    except grpc.RpcError as exc:
        seen["early"] = [exc.code().name, exc.details()]
    gate.set()
    deadline = time.monotonic() + 30
    while not stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready:
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.02)
    try:
        stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    except grpc.RpcError as exc:
        seen["open"] = exc.code().name
    channel.close()
seen["closed"] = bool(state.closing and state.coordinator._closed)
print(json.dumps(seen))
"""


def test_ready_only_once_the_coordinator_is_open(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", READINESS, str(tmp_path), str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["live"] is True and seen["ready_before"] is False
    assert seen["early"] == ["UNAVAILABLE", "the coordinator is not open yet"]
    assert seen["open"] == "UNAUTHENTICATED"  # open now: the key is what is missing
    assert seen["closed"] is True


def test_a_grpc_port_in_use_stops_serve_with_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([COORDINATOR, "--data-dir", str(tmp_path), "serve", "--port",
                               str(free_port()), "--grpc-port", str(port)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"cannot bind the gRPC port 127.0.0.1:{port}" in done.stderr


def test_the_grpc_port_must_differ_from_the_http_port(tmp_path: Path) -> None:
    done = subprocess.run([COORDINATOR, "--data-dir", str(tmp_path), "serve", "--port", "8123",
                           "--grpc-port", "8123"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is the HTTP --port too" in done.stderr, done.stderr


DEPTH = 64  # MatMul + Tanh layers of the slow model


def slow_model() -> bytes:
    """x[1,256] float32 and reps[2] int64 -> y[1,256]: x tiled to reps[0] rows, DEPTH layers
    of one shared 256x256 weight, then summed over the rows; so a test sends a few bytes and
    chooses how long one ModelInfer runs."""
    w = (np.random.default_rng(0).standard_normal((256, 256)) / 16).astype(np.float32)
    nodes, last = [h.make_node("Tile", ["x", "reps"], ["tiled"])], "tiled"
    for i in range(DEPTH):
        nodes += [h.make_node("MatMul", [last, "W"], [f"m{i}"]),
                  h.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        last = f"t{i}"
    nodes.append(h.make_node("ReduceSum", [last, "axes"], ["y"], keepdims=1))
    graph = h.make_graph(nodes, "slow", [h.make_tensor_value_info("x", T.FLOAT, [1, 256]),
                                         h.make_tensor_value_info("reps", T.INT64, [2])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 256])],
                         [nh.from_array(w, "W"), nh.from_array(np.array([0]), "axes")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


X_SLOW = np.full((1, 256), 0.01, np.float32)


def slow_inputs(rows: int) -> list[oip.InferInput]:
    x = oip.InferInput("x", [1, 256], "FP32")
    x.set_data_from_numpy(X_SLOW)
    reps = oip.InferInput("reps", [2], "INT64")
    reps.set_data_from_numpy(np.array([rows, 1]))
    return [x, reps]


def timed_out_after(http: httpx.Client, client: oip.InferenceServerClient, rows: int) -> None:
    """A call whose deadline is shorter than its execution: the execution ends with it (it
    does not run on for nobody)."""
    def executions() -> list[dict[str, Any]]:
        records = http.get("/v1/audit", params={"limit": "1000"}).json()["records"]
        return [r for r in records if r["record_kind"] == "execution"]

    before = len(executions())
    with pytest.raises(InferenceServerException) as caught:
        client.infer("slow", slow_inputs(rows), client_timeout=0.3)
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    deadline = time.monotonic() + 30
    while len(found := executions()) == before:
        assert time.monotonic() < deadline, "the execution left no audit record"
        time.sleep(0.05)
    # cancelled when the server sees the call end first, timed_out when the timeout fires first
    assert found[-1]["status"] in ("timed_out", "cancelled"), found[-1]


def test_sigterm_lets_an_in_flight_model_infer_finish(tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([COORDINATOR, "--data-dir", str(tmp_path / "data"), "serve",
                                 "--no-auth", "--port", str(port), "--grpc-port",
                                 str(grpc_port)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "COORDINATOR_DEFAULT_TIMEOUT": "25"})
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    client = oip.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    code = slow_model()
    replies: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get("/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        made = http.post("/v1/resources", content=code, params={"type": "onnx", "name": "slow"})
        assert made.status_code == 201, made.text

        def infer(rows: int) -> Any:
            return client.infer("slow", slow_inputs(rows), client_timeout=60)

        infer(64)  # loads the session
        started = time.monotonic()
        infer(512)
        rows = max(512, int(512 * 1.0 / max(time.monotonic() - started, 1e-3)))  # about 1 s
        timed_out_after(http, client, rows * 5)
        worker = threading.Thread(target=lambda: replies.append(infer(rows)))
        worker.start()
        time.sleep(0.25)  # the call is running now
        assert not replies
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        assert proc.wait(timeout=60) == 0, log_path.read_text()
    finally:
        client.close()
        http.close()
        if proc.poll() is None:
            proc.kill()
    [result] = replies
    session = ort.InferenceSession(code, providers=["CPUExecutionProvider"])
    expected = session.run(["y"], {"x": X_SLOW, "reps": np.array([rows, 1])})[0]
    np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-4)
    assert "the coordinator is closed" in log_path.read_text()
