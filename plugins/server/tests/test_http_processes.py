"""``coordinator serve --workers 3``: three HTTP processes on one port and one data directory,
all committing through the first one's writer: every request served, by more than one
process, no lost update on a counter, one chain, and SIGTERM stops them all cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .conftest import COORDINATOR, cli, free_port

COUNTER = Path(__file__).resolve().parents[3] / "examples" / "counter.wat"
REQUESTS = 120


def test_three_http_processes_share_the_port_and_the_writer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    deployed = json.loads(cli(data, "deploy", str(COUNTER), "--type", "wasm", "--grant",
                              "storage", "--json").stdout)
    rid = deployed["resource_id"]
    token = json.loads(cli(data, "keys", "create", "ops", "--scope", "admin", "--json")
                       .stdout)["token"]
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([COORDINATOR, "--data-dir", str(data), "serve", "--port",
                                 str(port), "--workers", "3"],
                                stdout=log, stderr=subprocess.STDOUT)
    headers = {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # ready: the first process says so once every process has opened
            try:
                if all(httpx.get(f"{url}/v2/health/ready").status_code == 200
                       for _ in range(20)):
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)

        def execute(_: int) -> str:
            # A new connection per request, so the kernel spreads them over the processes;
            # 503 is what a process still opening answers (a client retries it).
            for _ in range(100):
                reply = httpx.post(f"{url}/v1/executions", headers=headers,
                                   json={"resource_id": rid}, timeout=60)
                if reply.status_code != 503:
                    break
                time.sleep(0.1)
            assert reply.status_code == 200, reply.text
            execution_id: str = reply.json()["execution_id"]
            return execution_id

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(execute, range(REQUESTS)))
        # Each process numbers its executions under its own random prefix.
        assert len({eid.rsplit("-", 1)[0] for eid in ids}) > 1
        state = httpx.get(f"{url}/v1/resources/{rid}/state/count", headers=headers).json()
        assert state["key"] == "count"
        verify = httpx.get(f"{url}/v1/audit/verify", headers=headers).json()
        assert verify["ok"] and verify["count"] == 1 + REQUESTS
        import base64

        assert int.from_bytes(base64.b64decode(state["value"]), "little") == REQUESTS
        children = [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()]
        assert len(children) >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = log_path.read_text()
    assert code == 0, text
    assert text.count("the coordinator is closed") == 3, text
    for pid in children:
        try:
            os.kill(pid, 0)
            raise AssertionError(f"HTTP process {pid} outlived the server")
        except ProcessLookupError:
            pass
    assert not (data / "writer.sock").exists()
