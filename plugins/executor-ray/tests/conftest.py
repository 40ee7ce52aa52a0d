"""Shared parts of the Ray executor's tests: the example contracts, a coordinator factory on
the cluster this process is connected to, and the check that a cluster left no process."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from coordinator_core import Coordinator, ExecutionRequest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
BUSY = (EXAMPLES / "busy.wat").read_text()
COUNTER = (EXAMPLES / "counter.wat").read_text()
#: steps of ``busy.wat`` that take well over a second on the test machine
LONG = 400_000_000
BIG_FEE = 10**12


def on_ray(path: Path, **ray: Any) -> Coordinator:
    """A coordinator whose wasmtime and onnxruntime engines run in Ray actors."""
    settings = {"engines": ["wasmtime", "onnxruntime"], "kill_grace": 1.0, **ray}
    return Coordinator.open(data_dir=path, overrides={"dispatch": {"executor": "ray"},
                                                      "ray": settings})


def busy(coord: Coordinator, rid: str, steps: int, **kw: Any) -> ExecutionRequest:
    return ExecutionRequest(resource_id=rid, input=struct.pack("<Q", steps),
                            fee_limit=BIG_FEE, **kw)


def actors(coord: Coordinator, engine: str = "wasmtime") -> list[dict[str, Any]]:
    return coord.metrics()["engines"][engine]["workers"]["actors"]  # type: ignore[no-any-return]


def wait_busy_actor(coord: Coordinator, engine: str = "wasmtime") -> dict[str, Any]:
    """The actor running an execution, once one is."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        running = [a for a in actors(coord, engine) if a["inflight"]]
        if running:
            return running[0]
        time.sleep(0.01)
    raise AssertionError("no actor started the execution")


def descendants(pid: int) -> list[int]:
    """Every live process descended from ``pid`` (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def assert_no_ray_processes_left(before: set[int]) -> None:
    """Once Ray is shut down, none of the processes it started may remain (waits briefly:
    Ray stops its processes asynchronously)."""
    end = time.monotonic() + 20
    while True:
        left = set(descendants(os.getpid())) - before
        if not left or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert not left, f"Ray left processes behind: {sorted(left)}"
