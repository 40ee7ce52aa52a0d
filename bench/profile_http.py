"""Where a served request's time goes: py-spy on a live ``coordinator serve`` under load.

Starts the server as ``bench_http`` does, drives it with the load generator (its own process)
and records the serving process with py-spy, counting only samples that hold the interpreter
lock (``--gil``): in one Python process that lock is what the event loop and the pipeline
workers compete for. Prints the functions with the largest self and inclusive shares.

py-spy is installed on first use into ``.bench-venv/tools`` with the pinned uv, never into the
project's environment. Not part of ``make bench``; run it when a target is missed:
``.venv/bin/python -m bench.profile_http [--workload infer|execute] [--clients 32]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench_http import INFER_BODY, _prepare
from bench.http_servers import ROOT, UV, CoordinatorServer
from bench.loadgen import build_request

TOOLS = ROOT / ".bench-venv" / "tools"
PY_SPY = TOOLS / "bin" / "py-spy"


def ensure_py_spy() -> Path:
    if not PY_SPY.exists():
        if not (TOOLS / "bin" / "python").exists():
            subprocess.run([str(UV), "venv", "--quiet", str(TOOLS)], check=True)
        subprocess.run([str(UV), "pip", "install", "--quiet", "--python",
                        str(TOOLS / "bin" / "python"), "py-spy"], check=True)
    return PY_SPY


def summarise(raw: Path, top: int) -> str:
    """Self and inclusive shares of the collapsed stacks py-spy wrote (``--format raw``)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        threads[frames[0]] += n
        own[frames[-1]] += n
        for frame in set(frames[1:]):
            inclusive[frame] += n
    out = [f"{total} samples holding the interpreter lock"]
    for title, counter in (("threads", threads), ("self", own), ("inclusive", inclusive)):
        out.append(f"--- {title}")
        out += [f"{n / total:6.1%}  {name[:140]}" for name, n in counter.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("infer", "execute"), default="infer")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=7)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    py_spy = ensure_py_spy()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        config, wat, onnx = _prepare(tmp)
        server = CoordinatorServer(tmp, config)
        rid = server.deploy(wat, "wasm", "add")
        server.deploy(onnx, "onnx", "tiny")
        auth = [("Authorization", f"Bearer {server.create_key('bench')}"),
                ("Content-Type", "application/json")]
        host = f"127.0.0.1:{server.port}"
        if args.workload == "infer":
            request = build_request("POST", "/v2/models/tiny/infer", host, INFER_BODY, auth)
        else:
            body = json.dumps({"resource_id": rid, "entry": "add", "args": [2, 3]}).encode()
            request = build_request("POST", "/v1/executions", host, body, auth)
        (tmp / "request.bin").write_bytes(request)
        server.start()
        try:
            assert server.proc is not None
            load = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", "--port", str(server.port),
                 "--request-file", str(tmp / "request.bin"), "--clients", str(args.clients),
                 "--warmup", "1", "--duration", str(args.seconds + 1)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True)
            raw = tmp / "profile.txt"
            subprocess.run([str(py_spy), "record", "--pid", str(server.proc.pid), "--gil",
                            "--threads", "--format", "raw", "-r", "250", "-d",
                            str(args.seconds), "-o", str(raw)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(load.communicate()[0].strip())
            print(summarise(raw, args.top))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":  # python -m bench.profile_http (from the repository root)
    sys.exit(main())
