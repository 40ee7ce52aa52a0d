"""CLI start-up: wall time of ``coordinator --help`` and ``coordinator plugins``.

Every command loads every installed plugin before it does anything, so start-up is what
``--help`` and the diagnosis command ``plugins`` cost. Each is run as its own process, best
of N (the minimum: start-up has no useful spread, only noise from the shared machine),
interleaved with ``python -c pass`` (the interpreter's own start-up) so both see the same
machine; the byte-code cache is on, as in an installed environment (the sandbox turns it off
with PYTHONDONTWRITEBYTECODE, so a private PYTHONPYCACHEPREFIX is used). The data directory
is a fresh temporary one and COORDINATOR_* variables are cleared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Table

SECTION = "CLI start-up"
ROUNDS = 15
TARGET = 0.3  # seconds, best of N


def _best_times(commands: dict[str, list[str]], env: dict[str, str], rounds: int,
                cwd: str) -> dict[str, float]:
    best = {name: float("inf") for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, check=False)
            elapsed = time.perf_counter() - t0
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: "
                                   f"{done.stderr.decode(errors='replace')[-300:]}")
            best[name] = min(best[name], elapsed)
    return best


def run(table: Table) -> None:
    script = Path(sys.executable).with_name("coordinator")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("COORDINATOR_") and k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        env["COORDINATOR_DATA_DIR"] = str(Path(tmp) / "data")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "coordinator --help": [str(script), "--help"],
            "coordinator plugins": [str(script), "plugins"],
        }
        _best_times(commands, env, 1, tmp)  # writes the byte-code cache
        best = _best_times(commands, env, ROUNDS, tmp)
    base = best.pop("python -c pass")
    table.add(SECTION, "python -c pass", base, "s", note=f"best of {ROUNDS}: the interpreter alone")
    for name, seconds in best.items():
        table.add(SECTION, name, seconds, "s", target=f"<= {TARGET}", ok=seconds <= TARGET,
                  note=f"best of {ROUNDS}, every installed plugin loaded; "
                       f"{seconds - base:.3f} s over the interpreter")
