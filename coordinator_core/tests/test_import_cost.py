"""Importing the core, its built-in plugins included, loads no tensor library; the CLI's
diagnosis commands load no engine runtime, no Prometheus client and no logging library.

Every ``coordinator`` command loads every installed plugin, so whatever a plugin imports when
it loads, every command pays for at start. The engines are built on first use, the
Prometheus registry on first scrape, and loguru is imported with the first message; these
tests run the real ``coordinator`` script and read ``sys.modules`` when it exits.
(How long start-up takes is measured by ``make bench``, not asserted here.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Modules the CLI must not import before a command needs them.
HEAVY = ("wasmtime", "prometheus_client", "numpy", "onnxruntime", "onnx", "loguru")


@pytest.mark.parametrize("module", ["coordinator_core.host_functions.hybrid", "coordinator_core",
                                    "coordinator_core.plugin_host.builtins"])
def test_core_import_does_not_load_numpy(module: str) -> None:
    probe = (f"import sys, {module}\n"
             "print(sorted(m for m in ('numpy', 'onnxruntime', 'wasmtime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", f"importing {module} loaded {out.strip()}"


def test_tensors_still_decode_to_arrays_once_numpy_is_used() -> None:
    import numpy as np

    from coordinator_core.host_functions.codec import decode_tensors, encode_tensors

    data = encode_tensors({"x": np.arange(6, dtype=np.int32).reshape(2, 3)})
    decoded = decode_tensors(data)["x"]
    assert isinstance(decoded, np.ndarray) and decoded.dtype == np.int32
    assert decoded.tolist() == [[0, 1, 2], [3, 4, 5]]


#: Runs the ``coordinator`` script as its own process would, then writes ``sys.modules``.
_PROBE = """
import atexit, json, runpy, sys
out, script = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def _imported_by(args: list[str], tmp_path: Path) -> set[str]:
    """Every module the ``coordinator`` script has imported when it exits after ``args``."""
    script = Path(sys.executable).with_name("coordinator")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")}
    env["COORDINATOR_DATA_DIR"] = str(tmp_path / "data")
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", _PROBE, str(out), str(script), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(out.read_text()))


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--json"],
                                  ["config", "show"]])
def test_cli_diagnosis_commands_import_no_heavy_module(args: list[str], tmp_path: Path) -> None:
    modules = _imported_by(args, tmp_path)
    assert "coordinator_engine_wasmtime.plugin" in modules  # every plugin was loaded
    assert "coordinator_metrics_prometheus.plugin" in modules
    loaded = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert loaded == [], f"coordinator {' '.join(args)} imported {loaded}"
