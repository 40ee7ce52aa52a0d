"""A wasm trap in the coordinator's own process still fails only its execution after the Ray
executor started a cluster and after it shut it down: ``ray.init`` replaces the fault-signal
handlers wasmtime turns traps into exceptions with, ``ray.shutdown`` resets them, and the
executor puts them back each time (``signals.py``). Run in a fresh
process, so wasmtime's handlers are installed before Ray's, the order that used to crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys
    from coordinator_core import Coordinator, ExecutionRequest

    TRAP = '(module (func (export "main") unreachable))'
    data = sys.argv[1]

    def trap(coord):
        rid = coord.deploy(TRAP, "wasm", source_format="wat")
        result = coord.execute(ExecutionRequest(resource_id=rid))
        assert result.error is not None and result.error.kind.value == "trap", result
        print("trapped", flush=True)

    with Coordinator.open(data_dir=data + "/threads") as local:
        trap(local)  # wasmtime's handlers are now installed
        with Coordinator.open(data_dir=data + "/ray", overrides={
                "dispatch": {"executor": "ray"},
                "ray": {"engines": ["onnxruntime"], "num_cpus": 1}}) as on_ray:
            trap(local)
            trap(on_ray)  # wasmtime left on threads in this process
        trap(local)  # after ray.shutdown, which resets the handlers to the default
    print("alive", flush=True)
""")


def test_a_wasm_trap_after_ray_started_fails_only_its_execution(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["trapped"] * 4 + ["alive"], done.stdout
