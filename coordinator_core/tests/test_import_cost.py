"""Importing the core, its built-in plugins included, loads no tensor library.

The hybrid host function is a built-in plugin, so whatever it imports at module level every
``coordinator`` command pays for at start; numpy alone costs a large share of ``--help``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


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
