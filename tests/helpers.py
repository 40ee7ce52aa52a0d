"""Helpers of the integration tests: the CLI in a subprocess, a small echo contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: A contract echoing its input, using only the always-granted ``io`` capability.
ECHO_WAT = """
(module
  (import "env" "input_len" (func $input_len (result i32)))
  (import "env" "input_read" (func $input_read (param i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "main")
    (local $n i32)
    (local.set $n (call $input_len))
    (call $input_read (i32.const 0))
    (call $output_write (i32.const 0) (local.get $n)))
  (func (export "add") (param i64 i64) (result i64)
    (i64.add (local.get 0) (local.get 1))))
"""

#: Adds one to a little-endian i64 under key "count" and returns the new value
#: (``examples/counter.wat``, the contract of issue 3's benchmark).
COUNTER_WAT = (Path(__file__).resolve().parents[1] / "examples" / "counter.wat").read_text()

BIN = Path(sys.executable).parent


def run_cli(
    *args: str,
    data_dir: Path | None,
    env: dict[str, str] | None = None,
    python: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the ``coordinator`` console script in a subprocess (``--data-dir`` first if given)."""
    exe = (python.parent if python else BIN) / "coordinator"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(exe), *(("--data-dir", str(data_dir)) if data_dir else ()), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


def cli_json(*args: str, data_dir: Path, **kw: Any) -> tuple[int, Any]:
    done = run_cli(*args, "--json", data_dir=data_dir, **kw)
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"not JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        ) from None


class FdReady:
    """``ready.set()`` for a child started as a plain subprocess: one byte on a pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def set(self) -> None:
        os.write(self.fd, b"r")


def start_killable_child(target: Any, *args: Any, daemon: bool = True) -> tuple[Any, Any]:
    """Start ``target(*args, ready)`` in a child forked by multiprocessing's fork server.

    The fork server is a single-threaded process, so its children never inherit a lock held
    by one of the test process's threads (a plain ``os.fork`` of pytest can deadlock), and
    forking from it is much faster than a fresh interpreter. Returns (process, ready event).
    """
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["coordinator_core.coordination.coordinator", "coordinator_engine_wasmtime"])
    ready = ctx.Event()
    # daemon=False for a child that starts processes of its own (worker processes)
    process = ctx.Process(target=target, args=(*args, ready), daemon=daemon)
    process.start()
    return process, ready
