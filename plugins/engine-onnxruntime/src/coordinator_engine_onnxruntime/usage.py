"""The memory an ONNX execution reports: the bytes of its input and output tensors.

``EngineResult.memory_bytes`` is their sum and ``usage`` names both parts. It is what the
execution itself brings and takes away; the intermediate tensors of a run live in
onnxruntime's CPU arena, whose use the Python API does not report (neither per run nor per
session), so it is not counted here. The arena is shared by every session and bounded by
``[onnx] max_memory_mb`` instead (docs/onnx.md). A string tensor counts its object pointers,
not the strings' own bytes; an output that is not a tensor (a sequence or a map) counts 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def tensor_use(feeds: Mapping[str, Any], outputs: Iterable[Any]) -> tuple[int, dict[str, int]]:
    """(input + output bytes, {"input_bytes", "output_bytes"}) of one run."""
    given = sum(array.nbytes for array in feeds.values())
    made = sum(getattr(value, "nbytes", 0) for value in outputs)
    return given + made, {"input_bytes": given, "output_bytes": made}
