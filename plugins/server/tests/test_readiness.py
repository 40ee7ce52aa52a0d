"""Readiness follows the coordinator: the port answers at once, ``/v2/health/ready`` is 503
and other routes say so until the coordinator is open, and a coordinator that fails to open
stops the server with the reason. In-process, on Starlette's test client and a real
coordinator."""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

with warnings.catch_warnings():  # Starlette would rather its test client ran on httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from coordinator_core.coordination.coordinator import Coordinator
from coordinator_server.app import ServerState
from coordinator_server.serve import build_app


def test_ready_only_once_the_coordinator_is_open(tmp_path: Path) -> None:
    gate = threading.Event()

    @contextlib.contextmanager
    def opener() -> Iterator[Any]:
        gate.wait(30)
        with Coordinator.open(data_dir=tmp_path) as coordinator:
            yield coordinator

    state = ServerState()
    with TestClient(build_app(state, opener, lambda: None)) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        waiting = client.get("/v2/health/ready")
        assert waiting.status_code == 503 and waiting.json() == {"ready": False}
        early = client.get("/v2")
        assert early.status_code == 503 and "not open yet" in early.json()["error"]
        gate.set()
        deadline = time.monotonic() + 30
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.get("/v2").status_code == 401  # open now: the key is what is missing
    assert state.closing and state.coordinator._closed


def test_a_coordinator_that_fails_to_open_stops_the_server(tmp_path: Path) -> None:
    stopped = threading.Event()

    def opener() -> Any:
        return Coordinator.open(data_dir=tmp_path, overrides={"coordinator": {"workers": -1}})

    state = ServerState()
    with TestClient(build_app(state, opener, stopped.set)) as client:
        assert stopped.wait(30)
        reply = client.get("/v2")
        assert reply.status_code == 503 and "failed to open" in reply.json()["error"]
        assert "workers" in reply.json()["error"]
        assert client.get("/v2/health/ready").status_code == 503
