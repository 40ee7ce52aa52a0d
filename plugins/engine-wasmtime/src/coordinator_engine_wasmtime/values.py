"""Converting between Python numbers and wasmtime's raw value slots (16 bytes each).

Used for an entry's numeric ``args``/results and for host function params/results; every
conversion is precomputed per signature so the hot path is one ``struct`` call.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Sequence
from typing import Any

from coordinator_engine_wasmtime._capi import RAW_SLOT
from coordinator_hookspecs import InvalidRequest

_CODE = {"i32": "i", "i64": "q", "f32": "f", "f64": "d"}
_SIZE = {"i32": 4, "i64": 8, "f32": 4, "f64": 8}
_RANGE = {"i32": (-(1 << 31), 1 << 32), "i64": (-(1 << 63), 1 << 64)}
_CTYPE: dict[str, Any] = {"i32": ctypes.c_int32, "i64": ctypes.c_int64, "f32": ctypes.c_float,
          "f64": ctypes.c_double}


def slots_struct(types: Sequence[str]) -> struct.Struct:
    """A ``struct`` reading/writing ``types`` from consecutive 16-byte slots; only numbers
    cross the request boundary (``InvalidRequest`` for v128 and reference types)."""
    unsupported = sorted({t for t in types if t not in _CODE})
    if unsupported:
        raise InvalidRequest(f"values of type {', '.join(unsupported)} cannot be passed in "
                             "or out through args (numbers only: i32, i64, f32, f64)")
    return struct.Struct("<" + "".join(f"{_CODE[t]}{RAW_SLOT - _SIZE[t]}x" for t in types))


def pack_args(entry: str, params: Sequence[str], args: Any) -> bytes:
    """Raw slots for calling ``entry`` with ``args``; ``InvalidRequest`` naming a mismatch."""
    if not isinstance(args, (list, tuple)):
        raise InvalidRequest(f"args of entry {entry!r} must be a list, got {type(args).__name__}")
    if len(args) != len(params):
        raise InvalidRequest(f"entry {entry!r} takes {len(params)} args ({', '.join(params)}), "
                             f"got {len(args)}")
    values = []
    for position, (kind, value) in enumerate(zip(params, args, strict=True)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f"arg {position} of entry {entry!r} must be a number ({kind}), "
                                 f"got {type(value).__name__}")
        if kind in _RANGE:
            low, high = _RANGE[kind]
            if not isinstance(value, int) or not low <= value < high:
                raise InvalidRequest(f"arg {position} of entry {entry!r} must be an integer "
                                     f"that fits {kind}, got {value!r}")
            bits = 32 if kind == "i32" else 64
            value = value - (1 << bits) if value >= 1 << (bits - 1) else value
        else:
            value = float(value)
        values.append(value)
    try:
        return slots_struct(params).pack(*values)
    except (OverflowError, struct.error) as exc:  # e.g. 1e300 for an f32
        raise InvalidRequest(f"args of entry {entry!r} do not fit ({', '.join(params)}): "
                             f"{exc}") from None


def results_reader(results: Sequence[str]) -> Callable[[int], list[Any]]:
    """Reads an entry's results from the raw slots at an address."""
    layout = slots_struct(results)
    size = layout.size

    def read(address: int) -> list[Any]:
        return list(layout.unpack(ctypes.string_at(address, size))) if size else []

    return read


def host_params(params: Sequence[str]) -> tuple[Callable[[bytes], tuple[Any, ...]] | None, int]:
    """(unpack, byte size) of a host function's params; None when it takes none."""
    if not params:
        return None, 0
    layout = slots_struct(params)
    return layout.unpack, layout.size


def host_results(results: Sequence[str]) -> Callable[[int, Any], None] | None:
    """Writes a host function's return value into the raw slots; None when it has none."""
    if not results:
        return None
    if len(results) == 1:
        setter = _CTYPE[results[0]].from_address

        def write_one(address: int, value: Any) -> None:
            setter(address).value = value

        return write_one
    setters = [(_CTYPE[t].from_address, i * RAW_SLOT) for i, t in enumerate(results)]
    count = len(results)

    def write_many(address: int, values: Any) -> None:
        if not isinstance(values, (tuple, list)) or len(values) != count:
            raise TypeError(f"expected a tuple of {count} results, got {values!r}")
        for (setter, offset), value in zip(setters, values, strict=True):
            setter(address + offset).value = value

    return write_many


def input_bytes(value: Any, limit: int) -> bytes:
    """An execution's input as bytes (``str`` as UTF-8); ``InvalidRequest`` otherwise."""
    if value is None:
        return b""
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise InvalidRequest(f"input of a wasm execution must be bytes, got "
                             f"{type(value).__name__}")
    if len(value) > limit:
        raise InvalidRequest(f"input of {len(value)} bytes exceeds {limit} "
                             "(wasmtime.max_input_bytes)")
    return value
