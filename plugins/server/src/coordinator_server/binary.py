"""The Open Inference Protocol's binary tensor data extension (REST).

A request may put tensor data after its JSON instead of inside it: the
``Inference-Header-Content-Length`` header gives the size of the JSON part, and each input
carrying ``"parameters": {"binary_data_size": n}`` takes the next ``n`` bytes of what
follows, in the order the inputs are listed. Data is little-endian, row-major, without
padding; BOOL is one byte (0 or 1); a BYTES element is a 4-byte little-endian length and then
its bytes. A response does the same for every output asked for in binary (the output's
``"binary_data": true``, or the request's ``"binary_data_output": true`` unless an output
says false): its JSON carries ``binary_data_size`` instead of ``data`` and the response has
the ``Inference-Header-Content-Length`` header.

Every size is checked against the body before anything is sliced: a declared size that is
not an integer, negative, past the end of the body, not what the tensor's shape and datatype
need, or leaving bytes unused is ``InvalidRequest`` with a message saying which.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from starlette.responses import JSONResponse, Response

from coordinator_hookspecs import InvalidRequest

HEADER = "inference-header-content-length"
MAX_DIGITS = 19  # a header length of more digits cannot fit any body


def split_body(raw: bytes, declared: str | None) -> tuple[bytes, BinaryData]:
    """The JSON part of an infer body and the binary data after it."""
    if declared is None:
        return raw, BinaryData(b"")
    text = declared.strip()
    if not text.isdigit() or not text.isascii() or len(text) > MAX_DIGITS:
        raise InvalidRequest(f"Inference-Header-Content-Length must be a non-negative "
                             f"integer, got {declared[:40]!r}")
    size = int(text)
    if size > len(raw):
        raise InvalidRequest(f"Inference-Header-Content-Length is {size} but the body has "
                             f"only {len(raw)} bytes")
    return raw[:size], BinaryData(memoryview(raw)[size:])


def binary_size(tensor: Mapping[str, Any], where: str) -> int | None:
    """The input's ``binary_data_size`` (None when its data is in the JSON)."""
    parameters = tensor.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, Mapping):
        raise InvalidRequest(f"{where}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise InvalidRequest(f"{where}: binary_data_size must be a non-negative integer, got "
                             f"{str(size)[:40]}")
    if "data" in tensor:
        raise InvalidRequest(f"{where}: has both 'data' and binary_data_size; give one")
    return size


class BinaryData:
    """The bytes after an infer request's JSON, taken input by input in order."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self._at = 0

    def take(self, size: int, shape: list[int], dtype: str, where: str) -> np.ndarray:
        """The next ``size`` bytes as an array of ``dtype`` and ``shape``."""
        left = len(self._data) - self._at
        if size > left:
            raise InvalidRequest(
                f"{where}: binary_data_size is {size} but only {left} bytes of binary data "
                f"are left (the body has {len(self._data)} after the JSON header"
                f"{'' if len(self._data) else '; is Inference-Header-Content-Length set?'})")
        chunk = self._data[self._at:self._at + size]
        self._at += size
        count = math.prod(shape)
        if dtype == "string":
            return _strings(chunk, count, where).reshape(shape)
        item = np.dtype(dtype).itemsize
        if size != count * item:
            raise InvalidRequest(f"{where}: binary_data_size is {size} but shape {shape} of "
                                 f"{dtype} needs {count * item} bytes")
        if dtype == "bool":
            raw = np.frombuffer(chunk, dtype=np.uint8)
            if raw.size and raw.max() > 1:
                raise InvalidRequest(f"{where}: a BOOL element must be the byte 0 or 1")
            return raw.view(np.bool_).reshape(shape)
        return np.frombuffer(chunk, dtype=np.dtype(dtype).newbyteorder("<")).astype(
            dtype, copy=False).reshape(shape)

    def finish(self) -> None:
        """``InvalidRequest`` if bytes are left that no input declared."""
        left = len(self._data) - self._at
        if left:
            raise InvalidRequest(f"{left} bytes of binary data after the JSON header belong "
                                 f"to no input (the inputs' binary_data_size add up to "
                                 f"{self._at})")


def _strings(chunk: memoryview, count: int, where: str) -> np.ndarray:
    """``count`` length-prefixed BYTES elements filling ``chunk`` exactly, as str (what an
    ONNX string tensor holds)."""
    at, end = 0, len(chunk)
    if count * 4 > end:  # checked before allocating: a shape may claim any count
        raise InvalidRequest(f"{where}: {count} BYTES elements need at least {count * 4} "
                             f"bytes (4 per length); binary_data_size is {end}")
    out = np.empty(count, dtype=object)
    for i in range(count):
        if end - at < 4:
            raise InvalidRequest(f"{where}: BYTES element {i} has no 4-byte length "
                                 f"({end - at} bytes left of {end})")
        (length,) = struct.unpack_from("<I", chunk, at)
        at += 4
        if length > end - at:
            raise InvalidRequest(f"{where}: BYTES element {i} declares {length} bytes but "
                                 f"only {end - at} are left")
        try:
            out[i] = bytes(chunk[at:at + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"{where}: BYTES element {i} is not UTF-8 text (a model's "
                                 "string tensor holds text)") from None
        at += length
    if at != end:
        raise InvalidRequest(f"{where}: {end - at} bytes are left after the {count} BYTES "
                             f"elements of the shape (binary_data_size {end})")
    return out


def binary_outputs(body: Mapping[str, Any], names: Iterable[str]) -> set[str]:
    """Which of the response's outputs ``names`` go in binary."""
    parameters = body.get("parameters") or {}
    every = parameters.get("binary_data_output", False) if isinstance(parameters,
                                                                      Mapping) else False
    if type(every) is not bool:
        raise InvalidRequest("parameters.binary_data_output must be true or false")
    choice: dict[str, bool] = {}
    for output in body.get("outputs") or ():
        params = output.get("parameters")
        if params is None:
            continue
        if not isinstance(params, Mapping):
            raise InvalidRequest(f"output {output['name']!r}: 'parameters' must be an object")
        flag = params.get("binary_data")
        if flag is None:
            continue
        if type(flag) is not bool:
            raise InvalidRequest(f"output {output['name']!r}: binary_data must be true or "
                                 "false")
        choice[output["name"]] = flag
    return {name for name in names if choice.get(name, every)}


def binary_tensor(name: str, datatype: str, array: np.ndarray) -> tuple[dict[str, Any], bytes]:
    """A response output sent in binary: its JSON (``binary_data_size``, no ``data``) and its
    bytes."""
    data = tensor_bytes(array)
    return ({"name": name, "datatype": datatype, "shape": list(array.shape),
             "parameters": {"binary_data_size": len(data)}}, data)


def tensor_bytes(array: np.ndarray) -> bytes:
    """An output's data in the extension's layout."""
    if array.dtype.kind in "OSU":
        parts: list[bytes] = []
        for value in array.ravel():
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts += (struct.pack("<I", len(data)), data)
        return b"".join(parts)
    if array.dtype.kind == "b":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def response(header: dict[str, Any], blobs: list[bytes]) -> Response:
    """The infer response: JSON alone, or JSON then the outputs' binary data."""
    if not blobs:
        return JSONResponse(header)
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return Response(b"".join([text, *blobs]), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(text))})
