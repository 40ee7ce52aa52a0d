"""The gRPC port's lifetime: it answers before the coordinator is open (ServerReady false,
keyed calls UNAVAILABLE, ServerReady true once open), and a gRPC port already in use stops
``coordinator serve`` with exit 1 and the reason.

The readiness check runs in a child process: it imports the server's own generated messages,
which cannot share protobuf's registry with the ``tritonclient.grpc`` the other tests import.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

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


def test_grpc_port_checks(tmp_path: Path) -> None:
    for args, says in ((["--grpc-port", "70000"], "--grpc-port 70000 is not a port number"),
                       (["--port", "8123", "--grpc-port", "8123"], "is the HTTP --port too")):
        done = subprocess.run([COORDINATOR, "--data-dir", str(tmp_path), "serve", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and says in done.stderr, done.stderr
