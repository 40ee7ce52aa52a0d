"""Take a screenshot of the dashboard (``/ui``) while ``make demo``'s workload runs against a
live ``coordinator serve``, into ``docs/dashboard.png``.

The demo's world (the token contract, the hybrid contract and the risk model, funded) is set
up in a fresh data directory as ``coordinator demo`` sets it up; then the server starts on it
with the demo's quota config, every caller of the demo's plan gets a key, and the plan's
executions are sent over HTTP (``POST /v1/executions``, one key per caller) from a few
threads, round after round, while headless Chromium signs in and watches. Needs Debian's
``chromium`` and ``chromium-driver`` and the dev group (Selenium)::

    .venv/bin/python scripts/dashboard_screenshot.py [--seconds 30] [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import chromium  # noqa: E402

COORDINATOR = str(Path(sys.executable).parent / "coordinator")
#: The demo's quota config (``demo_workload.OVERRIDES``) as the server's config file.
CONFIG = '[quota-rate.callers.dave]\nrate = 5.0\nburst = 2\nmode = "reject"\n'


def cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run([COORDINATOR, "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(data_dir: Path, executions: int, seed: int) -> list[Any]:
    """Set up the demo's world in ``data_dir`` and return its plan of executions."""
    from coordinator_core import Coordinator
    from coordinator_core.cli import demo_workload
    from coordinator_core.cli.demo import find_examples

    with Coordinator.open(None, data_dir=data_dir,
                          overrides=demo_workload.OVERRIDES) as coord:
        world = demo_workload.setup(coord, find_examples(None))
        return demo_workload.plan(world, executions, seed)


def body_of(request: Any) -> dict[str, Any]:
    """An ``ExecutionRequest`` as the contract API's JSON body (the caller is the key)."""
    body: dict[str, Any] = {"resource_id": request.resource_id}
    if request.entry is not None:
        body["entry"] = request.entry
    if isinstance(request.input, bytes | bytearray):
        body["input"] = base64.b64encode(bytes(request.input)).decode("ascii")
    else:
        body["input"] = request.input
    if request.fee_limit is not None:
        body["fee_limit"] = request.fee_limit
    if request.timeout is not None:
        body["timeout"] = request.timeout
    return body


def drive(url: str, tokens: dict[str, str], items: list[Any], stop: threading.Event,
          threads: int = 6) -> None:
    """Send the plan's executions round after round until ``stop``."""
    clients = threading.local()

    def send(item: Any) -> None:
        if stop.is_set():
            return
        client = getattr(clients, "client", None)
        if client is None:
            client = clients.client = httpx.Client(base_url=url, timeout=30)
        request = item.request
        client.post("/v1/executions", json=body_of(request),
                    headers={"Authorization": f"Bearer {tokens[request.caller]}"})

    with ThreadPoolExecutor(threads) as pool:
        while not stop.is_set():
            list(pool.map(send, items))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="how long the workload runs before the screenshot")
    parser.add_argument("--executions", type=int, default=600,
                        help="executions in one round of the demo's plan")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    why = chromium.missing()
    if why is not None:
        print(f"dashboard_screenshot: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="coordinator-dashboard-") as tmp:
        data_dir = Path(tmp) / "data"
        items = prepare(data_dir, args.executions, args.seed)
        config = Path(tmp) / "coordinator.toml"
        config.write_text(CONFIG)
        callers = sorted({item.request.caller for item in items})
        tokens = {name: json.loads(cli(data_dir, "keys", "create", name, "--json"))["token"]
                  for name in callers}
        operator = json.loads(cli(data_dir, "keys", "create", "operator", "--scope", "admin",
                                  "--json"))["token"]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (Path(tmp) / "serve.log").open("w+")
        server = subprocess.Popen([COORDINATOR, "--config", str(config), "--data-dir",
                                   str(data_dir), "serve", "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        stop = threading.Event()
        browser = None
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    print(f"the server did not start:\n{log.read()}", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            workload = threading.Thread(target=drive, args=(url, tokens, items, stop))
            workload.start()
            browser = chromium.Browser(width=1500, height=2300)
            browser.sign_in(url, operator)
            time.sleep(args.seconds)
            browser.driver.find_element("id", "verify-now").click()
            time.sleep(2.0)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            browser.driver.save_screenshot(args.out)
            errors = browser.console_errors()
            stop.set()
            workload.join()
        finally:
            stop.set()
            if browser is not None:
                browser.quit()
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            log.close()
    print(f"dashboard_screenshot: wrote {args.out}" +
          (f"; console errors: {errors}" if errors else ""), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
