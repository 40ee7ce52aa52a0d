"""Text and file I/O for the CLI: JSON or ``.npz`` in, JSON out.

``coordinator exec RID --input '{"x": [[1, 2, 3, 4]]}'`` passes text; ``--input-file x.npz``
passes a file's bytes. The core CLI calls :func:`decode_cli_input` and :func:`encode_output`
through the engine object (``engine.decode_cli_input``, ``engine.encode_output``) when the
engine has them. Both are pure functions, also used by the engine when a request's input
arrives as text or bytes rather than a mapping.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from coordinator_hookspecs import InvalidRequest

_ZIP_MAGIC = b"PK\x03\x04"


def decode_cli_input(data: str | bytes | bytearray, filename: str | None = None) -> dict[str, Any]:
    """A mapping of input name to value, from JSON text or ``.npz`` bytes.

    JSON must be an object: ``{"x": [[1.0, 2.0]]}``; each value is a nested list, a number,
    or ``{"data": [...], "shape": [...], "dtype": "float32"}``. An ``.npz`` (recognised by its
    name or its zip signature) is read without pickles. Empty input means no inputs.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if (filename or "").lower().endswith(".npz") or raw.startswith(_ZIP_MAGIC):
        return _decode_npz(raw)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(
            f"ONNX input must be a JSON object of input name to array or an .npz file: {exc}"
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"ONNX input must be a JSON object of input name to array, got {type(value).__name__}"
        )
    return value


def _decode_npz(raw: bytes) -> dict[str, Any]:
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise InvalidRequest(f"ONNX input is not a readable .npz archive: {exc}") from None


def as_mapping(value: Any) -> Mapping[str, Any]:
    """A request's ``input`` as a mapping: mappings pass through; text and bytes are decoded
    as above (the core CLI may hand over raw text); ``None`` means no inputs."""
    if isinstance(value, Mapping):
        return value
    if value is None:
        return {}
    if isinstance(value, str | bytes | bytearray | memoryview):
        return decode_cli_input(bytes(value) if isinstance(value, memoryview) else value)
    raise InvalidRequest(
        f"ONNX input must be a mapping of input name to array, got {type(value).__name__}"
    )


def encode_output(output: Any) -> Any:
    """JSON-compatible form of an engine output: arrays become nested lists, non-finite
    floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (JSON has no spelling for
    them), mappings and sequences are converted element by element."""
    if isinstance(output, np.ndarray):
        if output.dtype.kind in "fc" and not np.isfinite(output).all():
            return _finite(output.tolist())
        if output.dtype.kind in "SO":
            return _finite(output.tolist())
        return output.tolist()
    if isinstance(output, np.generic):
        return _finite(output.item())
    if isinstance(output, Mapping):
        return {str(k): encode_output(v) for k, v in output.items()}
    if isinstance(output, list | tuple):
        return [encode_output(v) for v in output]
    return _finite(output)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    return value
