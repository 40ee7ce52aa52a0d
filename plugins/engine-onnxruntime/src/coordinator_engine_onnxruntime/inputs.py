"""Checking a request's inputs against the model signature before anything runs.

onnxruntime checks inputs too, but its errors name C++ internals, and some mistakes
(a float64 array for a float32 input) it reports only after allocating. Checking here gives
``invalid_request`` with the input's name and what was expected, and costs well under a
microsecond per input on the fast path (an ndarray of the declared dtype).

Values may be numpy arrays (dtype must match exactly: silently casting an array would hide a
caller's bug), nested lists or scalars (converted to the declared dtype, refusing floats for
integer inputs and integers out of range), or JSON-style dicts ``{"data": ..., "shape": ...,
"dtype": ...}``. Dimensions with the same symbolic name must agree across inputs, as ONNX
defines them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from coordinator_hookspecs import InvalidRequest

_MISSING = object()


def _describe(dtype: str, shape: list[Any] | None) -> str:
    if shape is None:
        return f"{dtype}[any rank]"
    return f"{dtype}[{','.join('?' if d is None else str(d) for d in shape)}]"


class InputSpec:
    """One declared input, precomputed for the check: dtype, rank, fixed and named dims."""

    __slots__ = ("dtype", "dtype_name", "fixed", "name", "named", "problem", "rank", "text")

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.name: str = spec["name"]
        self.dtype_name: str = spec["dtype"]
        shape: list[Any] | None = spec["shape"]
        self.text = f"{self.name}: {_describe(self.dtype_name, shape)}"
        self.problem: str | None = None
        self.dtype: np.dtype[Any] | None = None
        if self.dtype_name.startswith(("seq(", "map(", "optional(", "sparse_tensor(", "unkn")):
            self.problem = f"has type {self.dtype_name}; only tensor inputs can be fed"
        elif self.dtype_name == "string":
            self.dtype = np.dtype(object)
        else:
            try:
                self.dtype = np.dtype(self.dtype_name)
            except TypeError:
                self.problem = f"has element type {self.dtype_name}, which numpy cannot feed"
        self.rank = None if shape is None else len(shape)
        self.fixed = tuple((i, d) for i, d in enumerate(shape or ()) if isinstance(d, int))
        self.named = tuple((i, d) for i, d in enumerate(shape or ()) if isinstance(d, str))

    def _fail(self, what: str) -> InvalidRequest:
        return InvalidRequest(f"input '{self.name}' {what}; expected {self.text}")

    def check(self, value: Any) -> np.ndarray:
        """The array to feed for ``value``, or ``InvalidRequest`` naming what is wrong."""
        if self.problem is not None:
            raise self._fail(self.problem)
        if type(value) is np.ndarray or isinstance(value, np.ndarray):
            if value.dtype != self.dtype and not self._string_ok(value):
                raise self._fail(f"is an array of {value.dtype}")
            array = value if type(value) is np.ndarray else np.asarray(value)
        else:
            array = self._convert(value)
        if self.rank is not None:
            if array.ndim != self.rank:
                raise self._fail(f"has rank {array.ndim} (shape {list(array.shape)})")
            shape = array.shape
            for axis, size in self.fixed:
                if shape[axis] != size:
                    raise self._fail(f"has {shape[axis]} at axis {axis} (shape {list(shape)})")
        return array

    def _string_ok(self, value: np.ndarray) -> bool:
        return self.dtype_name == "string" and value.dtype.kind in "UO"

    def _convert(self, value: Any) -> np.ndarray:
        shape = None
        if isinstance(value, Mapping):
            unknown = set(value) - {"data", "shape", "dtype"}
            if "data" not in value or unknown:
                raise self._fail("is a dict; use {\"data\": [...], \"shape\": [...]} (optional "
                                 "\"dtype\")")
            if value.get("dtype") not in (None, self.dtype_name):
                raise self._fail(f"says dtype {value['dtype']!r}")
            shape, value = value.get("shape"), value["data"]
        try:
            natural = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise self._fail(f"is not a rectangular array ({exc})") from None
        kind, want = natural.dtype.kind, self.dtype.kind if self.dtype is not None else "O"
        if natural.size and not _compatible(kind, want, self.dtype_name):
            if kind == "O" and want in "iu":  # numpy keeps ints past 64 bits as objects
                raise self._fail(f"has values outside the range of {self.dtype_name} "
                                 "(or not numbers)")
            raise self._fail(f"holds {_kind_name(kind)} values")
        if natural.size and want in "iu" and kind in "iu":
            info = np.iinfo(self.dtype)
            if natural.min() < info.min or natural.max() > info.max:
                raise self._fail(f"has values outside the range of {self.dtype_name}")
        array = natural.astype(self.dtype, copy=False)
        if shape is not None:
            try:
                array = array.reshape([int(d) for d in shape])
            except (ValueError, TypeError) as exc:
                raise self._fail(f"has {array.size} elements, not shape {shape} ({exc})") from None
        return array


def _compatible(kind: str, want: str, dtype_name: str) -> bool:
    if dtype_name == "string":
        return kind == "U"
    if want == "b":
        return kind == "b"
    if want in "iu":
        return kind in "iu"
    return kind in "biuf"


def _kind_name(kind: str) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point",
            "U": "string", "S": "bytes", "O": "mixed/object"}.get(kind, f"'{kind}'")


class Signature:
    """All declared inputs; :meth:`bind` turns a request's input into feeds."""

    __slots__ = ("named", "names", "specs")

    def __init__(self, inputs: list[Mapping[str, Any]]) -> None:
        self.specs = tuple(InputSpec(spec) for spec in inputs)
        self.names = frozenset(spec.name for spec in self.specs)
        # Agreement only needs checking when some dimension name occurs twice.
        names = [name for spec in self.specs for _, name in spec.named]
        self.named = len(names) != len(set(names))

    def bind(self, given: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        """Feeds for ``session.run`` and the total number of input elements."""
        feeds: dict[str, np.ndarray] = {}
        elements = 0
        for spec in self.specs:
            value = given.get(spec.name, _MISSING)
            if value is _MISSING:
                raise InvalidRequest(f"missing input '{spec.name}'; the model takes "
                                     f"{self.describe()}")
            array = spec.check(value)
            feeds[spec.name] = array
            elements += array.size
        if len(given) != len(feeds):
            unknown = sorted(str(k) for k in given if k not in self.names)
            raise InvalidRequest(f"unknown input {', '.join(map(repr, unknown))}; the model "
                                 f"takes {self.describe()}")
        if self.named:
            self._check_named(feeds)
        return feeds, elements

    def _check_named(self, feeds: dict[str, np.ndarray]) -> None:
        seen: dict[str, tuple[int, str]] = {}
        for spec in self.specs:
            shape = feeds[spec.name].shape
            for axis, name in spec.named:
                first = seen.setdefault(name, (shape[axis], spec.name))
                if first[0] != shape[axis]:
                    raise InvalidRequest(
                        f"dimension '{name}' is {first[0]} in input '{first[1]}' but "
                        f"{shape[axis]} in input '{spec.name}' (axis {axis}); inputs sharing a "
                        "named dimension must agree"
                    )

    def describe(self) -> str:
        return "; ".join(spec.text for spec in self.specs) or "no inputs"
