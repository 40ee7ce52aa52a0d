"""The servers the HTTP benchmark drives: ``coordinator serve`` and MLServer, as subprocesses.

``CoordinatorServer`` prepares a data directory through the real CLI (``deploy``, ``keys
create``) and runs ``coordinator serve`` on a free loopback port, exactly as an operator
would. ``MLServerProcess`` runs ``mlserver start`` on the same ONNX model through the minimal
runtime in ``bench/mlserver_runtime``, from a virtual environment of its own
(``.bench-venv/mlserver``, made on first use with the pinned uv): MLServer's dependencies are
many and heavy and must never enter the project's locked workspace. When that environment
cannot be made (no network, say) the MLServer rows are reported as skipped, with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COORDINATOR = str(Path(sys.executable).parent / "coordinator")
UV = ROOT / ".tools" / "bin" / "uv"
MLSERVER_VENV = ROOT / ".bench-venv" / "mlserver"
MLSERVER_VERSION = "1.7.1"
#: uvloop 0.22 made ``get_event_loop`` raise without a running loop, which MLServer 1.7's
#: inference worker processes call at start: they die and no model loads.
MLSERVER_EXTRA = ("uvloop==0.21.0",)
RUNTIME_DIR = ROOT / "bench" / "mlserver_runtime"
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _wait_ready(proc: subprocess.Popen[bytes], urls: list[str], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not all(_get(url) == 200 for url in urls):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} did not become ready:\n{tail}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class CoordinatorServer:
    """``coordinator serve`` over a fresh data directory holding ``resources``."""

    def __init__(self, workdir: Path, config: Path, serve_args: tuple[str, ...] = ()) -> None:
        self.workdir, self.config, self.serve_args = workdir, config, serve_args
        suffix = "-".join(a.strip("-") for a in serve_args)
        self.data_dir = workdir / ("served" + (f"-{suffix}" if suffix else ""))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / ("serve" + (f"-{suffix}" if suffix else "") + ".log")

    def cli(self, *args: str) -> str:
        done = subprocess.run([COORDINATOR, "--data-dir", str(self.data_dir), "--config",
                               str(self.config), *args], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"coordinator {' '.join(args[:2])} failed: {done.stderr[-500:]}")
        return done.stdout

    def deploy(self, path: Path, resource_type: str, name: str) -> str:
        out = self.cli("deploy", str(path), "--type", resource_type, "--name", name, "--json")
        return str(json.loads(out)["resource_id"])

    def create_key(self, name: str) -> str:
        out = self.cli("keys", "create", name, "--scope", "execute", "--json")
        return str(json.loads(out)["token"])

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [COORDINATOR, "--data-dir", str(self.data_dir), "--config", str(self.config),
                 "serve", "--port", str(self.port), *self.serve_args], stdout=log,
                stderr=subprocess.STDOUT)
        _wait_ready(self.proc, [f"http://127.0.0.1:{self.port}/v2/health/ready"], self.log,
                    "coordinator serve")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


def ensure_mlserver() -> str | None:
    """Make the MLServer environment if needed; None when ready, else why it cannot be."""
    ours = metadata.version("onnxruntime")
    pins = [f"mlserver=={MLSERVER_VERSION}", f"onnxruntime=={ours}", *MLSERVER_EXTRA]
    marker = MLSERVER_VENV / "bench-pins.txt"
    if marker.exists() and marker.read_text() == " ".join(pins):
        return None
    if not UV.exists():
        return f"no pinned uv at {UV} (run make setup)"
    python = MLSERVER_VENV / "bin" / "python"
    steps = [] if python.exists() else [
        [str(UV), "venv", "--quiet", "--python", sys.executable, str(MLSERVER_VENV)]]
    steps.append([str(UV), "pip", "install", "--quiet", "--python", str(python), *pins])
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return f"installing {' '.join(pins)} took over 900 s"
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return f"cannot install {' '.join(pins)}: {lines[-1] if lines else '?'}"[:200]
    marker.write_text(" ".join(pins))
    return None


class MLServerProcess:
    """``mlserver start`` serving ``model`` as ``name`` through the bench's ONNX runtime."""

    def __init__(self, workdir: Path, name: str, model: bytes, parallel_workers: int = 1
                 ) -> None:
        self.root = workdir / f"mlserver-{parallel_workers}"
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"mlserver-{parallel_workers}.log"
        folder = self.root / name
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(model)
        # Production settings: no debug (no access log); metrics and gRPC on ports of their
        # own, as MLServer wants. ``parallel_workers`` 1 is MLServer's default (inference in
        # a worker process); 0 runs it in the server's event loop.
        (self.root / "settings.json").write_text(json.dumps({
            "debug": False, "host": "127.0.0.1", "http_port": self.port,
            "parallel_workers": parallel_workers,
            "grpc_port": free_port(), "metrics_port": free_port(),
            "load_models_at_startup": True}))
        (folder / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "onnx_runtime.OnnxRuntimeModel",
            "parameters": {"uri": "./model.onnx"}}))

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(RUNTIME_DIR)}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(self.root)],
                cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{self.port}"
        _wait_ready(self.proc, [f"{base}/v2/health/ready", f"{base}/v2/models/{self.name}/ready"],
                    self.log, "mlserver start")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
