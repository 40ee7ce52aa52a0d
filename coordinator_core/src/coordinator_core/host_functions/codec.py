"""The tensor encoding of ``model_infer``: named tensors as compact little-endian bytes.

A helper of the built-in ``hybrid`` plugin (not a plugin itself). Chosen so that a contract
written in WAT or C can build a model's input with a data segment and a few stores, and read
the output at fixed offsets, without a JSON parser in the guest (docs/hybrid.md)::

    tensors := count:u8  tensor{count}
    tensor  := name_len:u8  name:utf8[name_len]  dtype:u8  ndim:u8  dims:u32le[ndim]
               data:(prod(dims) * itemsize bytes, little-endian, row-major)

``dtype`` uses ONNX's ``TensorProto.DataType`` numbers, so a C author can take them from the
ONNX headers. Decoded tensors are numpy arrays of exactly the encoded dtype when numpy is
importable (it always is next to the ONNX engine, which then checks the dtype strictly), else
nested lists (the core itself does not depend on numpy). Encoding reads arrays through their
``dtype``/``shape``/``tobytes`` attributes only.

numpy is imported on the first decode, not with this module: the hybrid plugin is a
built-in, so a module-level import would make every ``coordinator`` command (even ``--help``)
pay for loading numpy.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

#: ONNX ``TensorProto.DataType`` code -> (numpy dtype name, struct format, item size).
DTYPES: dict[int, tuple[str, str, int]] = {
    1: ("float32", "f", 4),
    2: ("uint8", "B", 1),
    3: ("int8", "b", 1),
    4: ("uint16", "H", 2),
    5: ("int16", "h", 2),
    6: ("int32", "i", 4),
    7: ("int64", "q", 8),
    9: ("bool", "?", 1),
    10: ("float16", "e", 2),
    11: ("float64", "d", 8),
    12: ("uint32", "I", 4),
    13: ("uint64", "Q", 8),
}
CODE_OF_DTYPE = {name: code for code, (name, _fmt, _size) in DTYPES.items()}
#: More dimensions than any model a contract would call needs; bounds the header work.
MAX_DIMS = 8
_U32 = struct.Struct("<I")


class EncodingError(ValueError):
    """Bytes that are not a valid tensor set, or an output the encoding cannot carry."""


def decode_tensors(data: bytes) -> dict[str, Any]:
    """Named tensors (arrays, see above); ``EncodingError`` says what is wrong."""
    if not data:
        raise EncodingError("empty input: a tensor set starts with its tensor count (u8)")
    count, pos = data[0], 1
    out: dict[str, Any] = {}
    for index in range(count):
        where = f"tensor {index}"
        name_len = _byte(data, pos, f"{where}: name length")
        raw_name = data[pos + 1 : pos + 1 + name_len]
        if len(raw_name) != name_len or name_len == 0:
            raise EncodingError(f"{where}: the name of {name_len} bytes is empty or cut short")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise EncodingError(f"{where}: the name is not UTF-8") from None
        if name in out:
            raise EncodingError(f"{where}: the name {name!r} occurs twice")
        pos += 1 + name_len
        code = _byte(data, pos, f"tensor {name!r}: dtype")
        if code not in DTYPES:
            raise EncodingError(f"tensor {name!r}: dtype code {code} is not one of "
                                f"{sorted(DTYPES)} (ONNX TensorProto.DataType numbers)")
        ndim = _byte(data, pos + 1, f"tensor {name!r}: ndim")
        if ndim > MAX_DIMS:
            raise EncodingError(f"tensor {name!r}: {ndim} dimensions, at most {MAX_DIMS}")
        pos += 2
        if pos + 4 * ndim > len(data):
            raise EncodingError(f"tensor {name!r}: the {ndim} dimensions are cut short")
        dims = [_U32.unpack_from(data, pos + 4 * i)[0] for i in range(ndim)]
        pos += 4 * ndim
        dtype, fmt, size = DTYPES[code]
        n = math.prod(dims)
        if pos + n * size > len(data):
            raise EncodingError(f"tensor {name!r}: shape {dims} of {dtype} needs {n * size} "
                                f"data bytes, {len(data) - pos} are left")
        try:
            out[name] = _array(data[pos : pos + n * size], dtype, fmt, dims)
        except (ValueError, MemoryError) as exc:  # e.g. a 0 dim beside dims numpy refuses
            raise EncodingError(f"tensor {name!r}: shape {dims} cannot be built: {exc}") from None
        pos += n * size
    if pos != len(data):
        raise EncodingError(f"{len(data) - pos} bytes follow the last of {count} tensors")
    return out


def _array(raw: bytes, dtype: str, fmt: str, dims: list[int]) -> Any:
    """A native-order array of ``dtype`` and shape ``dims`` from little-endian ``raw``."""
    np = _numpy()
    if np is not None:
        little = np.dtype(dtype).newbyteorder("<")
        return np.frombuffer(raw, dtype=little).astype(dtype).reshape(dims)
    values: Any = list(struct.unpack(f"<{len(raw) // struct.calcsize(fmt)}{fmt}", raw))
    for size in reversed(dims[1:]):  # nest innermost first: [a, b, c, d] -> [[a, b], [c, d]]
        values = [values[i : i + size] for i in range(0, len(values), size)]
    return values[0] if not dims else values


def _numpy() -> Any:
    """The numpy module, or None without it (the core itself does not depend on numpy)."""
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with every tensor engine
        return None
    return numpy


def _byte(data: bytes, pos: int, what: str) -> int:
    if pos >= len(data):
        raise EncodingError(f"{what}: the input ends at byte {len(data)}")
    return data[pos]


def encode_tensors(outputs: Mapping[str, Any]) -> bytes:
    """The tensor-set bytes of a model's outputs (a mapping of name to array), in order."""
    if len(outputs) > 255:
        raise EncodingError(f"{len(outputs)} outputs; the encoding carries at most 255")
    parts = [bytes((len(outputs),))]
    for name, value in outputs.items():
        raw_name = str(name).encode("utf-8")
        dtype = getattr(value, "dtype", None)
        code = CODE_OF_DTYPE.get(getattr(dtype, "name", ""))
        if code is None or not hasattr(value, "tobytes"):
            raise EncodingError(f"output {name!r} is {type(value).__name__} of dtype "
                                f"{getattr(dtype, 'name', None)}; only numeric and bool "
                                "tensors can be encoded")
        shape = tuple(int(d) for d in value.shape)
        if not 0 < len(raw_name) <= 255 or len(shape) > MAX_DIMS:
            raise EncodingError(f"output {name!r}: name of {len(raw_name)} bytes or "
                                f"{len(shape)} dimensions do not fit the encoding")
        little = value.astype(dtype.newbyteorder("<"), copy=False)  # type: ignore[union-attr]
        parts += [bytes((len(raw_name),)), raw_name, bytes((code, len(shape))),
                  b"".join(_U32.pack(d) for d in shape), little.tobytes(order="C")]
    return b"".join(parts)
