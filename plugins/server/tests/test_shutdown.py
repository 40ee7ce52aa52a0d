"""SIGTERM with executions in flight: a synchronous request still gets its result, a queued
one still finishes, and the server exits 0 with the coordinator closed. Also ``--no-auth`` on
loopback: a loud warning, and requests without a key are served as caller ``anonymous``."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from .conftest import COORDINATOR, cli, free_port

BUSY = b"""(module
  (func (export "main") (param $n i64) (result i64)
    (local $i i64)
    (local.set $i (local.get $n))
    (block $done
      (loop $l
        (br_if $done (i64.eqz (local.get $i)))
        (local.set $i (i64.sub (local.get $i) (i64.const 1)))
        (br $l)))
    (local.get $n)))"""
CALIBRATE = 20_000_000
TARGET = 1.0  # seconds each of the two executions in flight runs


def test_sigterm_lets_in_flight_executions_finish(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([COORDINATOR, "--data-dir", str(tmp_path / "data"), "serve",
                                 "--no-auth", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        text = log_path.read_text()
        assert "WARNING: --no-auth" in text and "auth OFF" in text
        rid = client.post("/v1/resources", content=BUSY,
                          params={"type": "wasm", "format": "wat"}).json()["resource_id"]
        trial = client.post("/v1/executions", json={"resource_id": rid, "args": [CALIBRATE],
                                                    "fee_limit": 10**12}).json()
        loops = int(CALIBRATE * TARGET * 1000 / max(trial["duration_ms"], 1.0))
        call = {"resource_id": rid, "args": [loops], "fee_limit": 10**12, "timeout": 30}
        queued = client.post("/v1/executions", params={"wait": "false"}, json=call).json()
        replies: list[Any] = []
        sync = threading.Thread(target=lambda: replies.append(
            client.post("/v1/executions", json=call)))
        sync.start()
        time.sleep(TARGET / 4)  # both are running now
        assert not replies, replies[0].text
        proc.send_signal(signal.SIGTERM)
        sync.join(timeout=60)
        assert proc.wait(timeout=60) == 0, log_path.read_text()
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
    [reply] = replies
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["status"] == "succeeded" and result["caller"] == "anonymous"
    status = json.loads(cli(tmp_path / "data", "status", queued["execution_id"], "--json").stdout)
    assert status["status"] == "succeeded"
    assert "the coordinator is closed" in log_path.read_text()
