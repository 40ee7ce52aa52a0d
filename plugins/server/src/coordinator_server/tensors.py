"""Open Inference Protocol tensors to and from what the ONNX engine takes and returns.

Request tensors (``{"name", "shape", "datatype", "data"}``) become numpy arrays of the
datatype's dtype and the given shape: the pipeline's request checks measure arrays cheaply and
the engine takes an array of the declared dtype on its fast path, then checks rank and fixed
dimensions against the model signature. The conversion refuses what a silent cast would hide
(floats for an integer input, integers out of range, ragged data, a size that is not the
shape's). Outputs, numpy arrays, become OIP tensors with the data flattened in row-major
order, as the protocol lays it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from coordinator_hookspecs import InvalidRequest
from coordinator_server.binary import BinaryData, binary_size

#: OIP datatype -> numpy dtype name (the names the ONNX engine's signature uses).
DTYPE_OF: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "string",
}
DATATYPE_OF: dict[str, str] = {v: k for k, v in DTYPE_OF.items()}
DATATYPE_OF["object"] = "BYTES"
MAX_DIMS = 32


def datatype(dtype: str) -> str:
    """The OIP datatype of a numpy dtype name; types with no OIP name keep their own."""
    return DATATYPE_OF.get(dtype, dtype.upper())


def oip_shape(shape: list[Any] | None) -> list[int]:
    """A signature shape for metadata: symbolic or unknown dimensions are -1."""
    if shape is None:
        return [-1]
    return [d if isinstance(d, int) else -1 for d in shape]


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_DIMS or not all(
            type(d) is int and 0 <= d < 2**63 for d in value):
        raise InvalidRequest(f"{where}: 'shape' must be a list of at most {MAX_DIMS} "
                             f"non-negative integers, got {str(value)[:80]}")
    return value


def decode_inputs(body: Any, binary: BinaryData | None = None) -> dict[str, np.ndarray]:
    """The engine input (name -> array) of an infer request body; ``binary`` holds the bytes
    after the JSON for inputs with ``binary_data_size`` (the binary tensor data extension),
    and must be used up exactly."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the infer request must be a JSON object with 'inputs'")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("the infer request needs 'inputs', a non-empty list of tensors")
    feeds: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, Mapping):
            raise InvalidRequest(f"inputs[{i}] is not an object")
        name = tensor.get("name")
        where = f"input {name!r}" if isinstance(name, str) else f"inputs[{i}]"
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{where} has no 'name'")
        if name in feeds:
            raise InvalidRequest(f"{where} is given twice")
        kind = tensor.get("datatype")
        if kind not in DTYPE_OF:
            raise InvalidRequest(f"{where}: unknown datatype {str(kind)[:40]!r}; OIP datatypes "
                                 f"are {', '.join(DTYPE_OF)}")
        shape = _shape(tensor.get("shape"), where)
        size = binary_size(tensor, where)
        if size is not None:
            feeds[name] = (binary or BinaryData(b"")).take(size, shape, DTYPE_OF[kind], where)
            continue
        data = tensor.get("data")
        if not isinstance(data, list | int | float | bool | str):
            raise InvalidRequest(f"{where}: 'data' must be a list of values")
        feeds[name] = to_array(data, shape, DTYPE_OF[kind], where)
    if binary is not None:
        binary.finish()
    return feeds


def to_array(data: Any, shape: list[int], dtype: str, where: str) -> np.ndarray:
    """``data`` (flat or nested) as an array of ``dtype`` and ``shape``."""
    try:
        natural = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{where}: 'data' is not a rectangular array ({exc})") from None
    kind = natural.dtype.kind
    target = np.dtype(object) if dtype == "string" else np.dtype(dtype)
    if natural.size:
        allowed = {"b": "b", "i": "iu", "u": "iu", "f": "biuf", "O": "U"}[target.kind]
        if kind not in allowed:
            raise InvalidRequest(f"{where}: datatype {datatype(dtype)} cannot hold "
                                 f"{_KIND.get(kind, 'mixed')} values")
        if target.kind in "iu":
            info = np.iinfo(target)  # type: ignore[type-var]
            if natural.min() < info.min or natural.max() > info.max:
                raise InvalidRequest(f"{where}: values outside the range of {datatype(dtype)}")
    size = math.prod(shape)
    if natural.size != size:
        raise InvalidRequest(f"{where}: {natural.size} values do not fill shape {shape} "
                             f"({size} values)")
    return natural.astype(target, copy=False).reshape(shape)


_KIND = {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point", "U": "string",
         "O": "mixed or out-of-range"}


def requested_outputs(body: Mapping[str, Any]) -> list[str] | None:
    """Names in the request's ``outputs`` (None: all of the model's outputs)."""
    outputs = body.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
            isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in outputs):
        raise InvalidRequest("'outputs' must be a list of objects with a 'name'")
    return [o["name"] for o in outputs]


def check_outputs(available: list[str], wanted: list[str] | None) -> None:
    """``InvalidRequest`` if ``wanted`` names an output the model does not have."""
    missing = [n for n in wanted or () if n not in available]
    if missing:
        raise InvalidRequest(f"unknown output {', '.join(map(repr, missing))}; the model "
                             f"gives {', '.join(map(repr, available))}")


def encode_outputs(output: Mapping[str, Any], wanted: list[str] | None) -> list[dict[str, Any]]:
    """The response's ``outputs``: each named tensor with datatype, shape and flat data."""
    names = list(output) if wanted is None else wanted
    check_outputs(list(output), names)
    return [_tensor(name, np.asarray(output[name])) for name in names]


def _tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    flat = array.ravel()
    data = flat.tolist()
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        data = [v if math.isfinite(v) else str(v) for v in data]  # "nan", "inf", "-inf"
    elif flat.dtype.kind in "SO":
        data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data]
    return {"name": name, "datatype": datatype(str(array.dtype)), "shape": list(array.shape),
            "data": data}
