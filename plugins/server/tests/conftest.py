"""One live ``coordinator serve`` for the test session, as a subprocess on free loopback
ports (HTTP, and gRPC through ``--grpc-port``), over a data directory holding a tiny ONNX
model (two versions) and keys of each scope.

Everything the server sees is made through the real CLI (``deploy``, ``keys create``), so the
tests exercise the same path an operator does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

MAX_BODY = 1 << 20  # the live server's [server] max_body_bytes
COORDINATOR = str(Path(sys.executable).parent / "coordinator")


def cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([COORDINATOR, "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def classifier(seed: int) -> bytes:
    """Gemm + Softmax: x[N,4] float32 -> y[N,3], weights from ``seed``."""
    rng = np.random.default_rng(seed)
    graph = h.make_graph(
        [h.make_node("Gemm", ["x", "W", "B"], ["z"]),
         h.make_node("Softmax", ["z"], ["y"], axis=1)],
        "classifier",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])],
        [nh.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
         nh.from_array(rng.standard_normal(3).astype(np.float32), "B")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def await_ready(proc: subprocess.Popen[Any], ready: Callable[[], bool], log: IO[str],
                what: str, timeout: float = 60) -> None:
    """Poll ``ready()`` until it is true; fail the test with the server's log if the process
    exits or ``timeout`` passes first (a transport error counts as not ready yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            proc.kill()
            pytest.fail(f"{what} did not become ready:\n{log.read()}")
        time.sleep(0.1)


class Live:
    """The running server: its URL, data directory, models and tokens by key name, and
    ``grpc_target`` (``host:port`` of its gRPC port)."""

    def __init__(self, url: str, data_dir: Path, models: list[bytes],
                 tokens: dict[str, str], grpc_target: str = "") -> None:
        self.url, self.data_dir, self.models, self.tokens = url, data_dir, models, tokens
        self.grpc_target = grpc_target
        self.client = httpx.Client(base_url=url, timeout=30)

    def request(self, method: str, path: str, key: str | None = None,
                **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[key]}"} if key else {}
        return self.client.request(method, path, headers=headers, **kw)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("served")
    models = [classifier(1), classifier(2)]
    for i, code in enumerate(models):
        path = data_dir.parent / f"clf{i}.onnx"
        path.write_bytes(code)
        cli(data_dir, "deploy", str(path), "--type", "onnx", "--name", "clf")
        time.sleep(0.01)  # distinct deploy times order the versions
    tokens = {}
    for name, scope in (("alice", "execute"), ("dora", "deploy"), ("root", "admin"),
                        ("gone", "execute"), ("treasury", "execute")):
        made = cli(data_dir, "keys", "create", name, "--scope", scope, "--json")
        tokens[name] = json.loads(made.stdout)["token"]
    port = free_port()
    grpc_port = free_port()
    while grpc_port == port:
        grpc_port = free_port()
    log = (data_dir.parent / "serve.log").open("w+")
    env = {**os.environ, "COORDINATOR_SERVER__MAX_BODY_BYTES": str(MAX_BODY)}
    proc = subprocess.Popen([COORDINATOR, "--data-dir", str(data_dir), "serve", "--port",
                             str(port), "--grpc-port", str(grpc_port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Live(f"http://127.0.0.1:{port}", data_dir, models, tokens,
                  grpc_target=f"127.0.0.1:{grpc_port}")
    await_ready(proc, lambda: server.request("GET", "/v2/health/ready").status_code == 200,
                log, "coordinator serve")
    yield server
    server.client.close()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    log.seek(0)
    text = log.read()
    assert code == 0, f"coordinator serve exited with {code} on SIGTERM:\n{text}"
    assert "the coordinator is closed" in text
    log.close()
