"""Open Inference Protocol gRPC tensors to and from what the ONNX engine takes and returns.

An input tensor carries its data either in typed ``contents`` (the one field of its
datatype) or, for every input of a request alike, as bytes in ``raw_input_contents``
(little-endian, row-major; a BYTES element is a 4-byte little-endian length and its bytes).
Typed contents go through the REST conversion (:func:`coordinator_server.tensors.to_array`),
so both front ends refuse the same things: a value the datatype cannot hold, a size that is
not the shape's. Raw contents must be exactly the shape's size in bytes.

Outputs are always answered as ``raw_output_contents``, as Triton does: it is the compact form,
and the one standard clients (``tritonclient.grpc``'s ``as_numpy``) read.

The functions only read and write the messages' fields, never import them: any copy of the
protocol's generated messages works (the tests use the client's own).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from coordinator_hookspecs import InvalidRequest
from coordinator_server.tensors import DTYPE_OF, _shape, datatype, to_array

#: The ``InferTensorContents`` field of each OIP datatype (FP16 has none: raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
_FIELDS = tuple(sorted(set(CONTENTS_FIELD.values())))
#: The element type of each typed field: values are read at that type, so a large UINT64
#: stays an integer, and then checked against the datatype's range.
FIELD_DTYPE: dict[str, str] = {
    "bool_contents": "bool", "int_contents": "int32", "int64_contents": "int64",
    "uint_contents": "uint32", "uint64_contents": "uint64", "fp32_contents": "float32",
    "fp64_contents": "float64",
}

if TYPE_CHECKING:
    from coordinator_server.grpc import inference_pb2 as pb


def parameter_value(param: pb.InferParameter) -> Any:
    """The Python value of one ``InferParameter`` (None when none of its fields is set)."""
    which = param.WhichOneof("parameter_choice")
    return None if which is None else getattr(param, which)


def parameters_dict(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {name: parameter_value(value) for name, value in params.items()}


def set_parameter(params: Any, name: str, value: Any) -> None:
    """Store ``value`` (bool, int, float or str) as the parameter ``name``."""
    if isinstance(value, bool):
        params[name].bool_param = value
    elif isinstance(value, int):
        params[name].int64_param = value
    elif isinstance(value, float):
        params[name].double_param = value
    else:
        params[name].string_param = str(value)


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The engine input (name -> array) of a ``ModelInferRequest``."""
    if not request.inputs:
        raise InvalidRequest("the infer request needs 'inputs', a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"raw_input_contents has {len(raw)} entries for "
                             f"{len(request.inputs)} inputs; it needs one per input")
    feeds: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        where = f"input {tensor.name!r}" if tensor.name else f"inputs[{i}]"
        if not tensor.name:
            raise InvalidRequest(f"{where} has no 'name'")
        if tensor.name in feeds:
            raise InvalidRequest(f"{where} is given twice")
        if tensor.datatype not in DTYPE_OF:
            raise InvalidRequest(f"{where}: unknown datatype {tensor.datatype[:40]!r}; OIP "
                                 f"datatypes are {', '.join(DTYPE_OF)}")
        shape = _shape(list(tensor.shape), where)
        set_fields = [f for f in _FIELDS if len(getattr(tensor.contents, f))]
        if raw:
            if set_fields:
                raise InvalidRequest(f"{where}: 'contents' may not be set when the request "
                                     "uses raw_input_contents")
            feeds[tensor.name] = from_raw(raw[i], shape, tensor.datatype, where)
        else:
            feeds[tensor.name] = from_contents(tensor.contents, set_fields, shape,
                                               tensor.datatype, where)
    return feeds


def from_contents(contents: pb.InferTensorContents, set_fields: list[str], shape: list[int],
                  kind: str, where: str) -> np.ndarray:
    """A tensor given in typed ``contents``."""
    field = CONTENTS_FIELD.get(kind)
    if field is None:
        raise InvalidRequest(f"{where}: datatype {kind} has no typed contents; send it in "
                             "raw_input_contents")
    wrong = [f for f in set_fields if f != field]
    if wrong:
        raise InvalidRequest(f"{where}: datatype {kind} is given in {field}, not in "
                             f"{', '.join(wrong)}")
    values: Sequence[Any] = getattr(contents, field)
    if kind == "BYTES":
        data: Any = [_text(v, where) for v in values]
    else:
        data = np.array(values, dtype=FIELD_DTYPE[field])
    return to_array(data, shape, DTYPE_OF[kind], where)


def from_raw(raw: bytes, shape: list[int], kind: str, where: str) -> np.ndarray:
    """A tensor given as raw little-endian bytes."""
    size = math.prod(shape)
    if kind == "BYTES":
        return np.array(split_bytes(raw, size, where), dtype=object).reshape(shape)
    dtype = np.dtype(DTYPE_OF[kind]).newbyteorder("<")
    if len(raw) != size * dtype.itemsize:
        raise InvalidRequest(f"{where}: {len(raw)} bytes of raw contents do not fill shape "
                             f"{shape} of {kind} ({size * dtype.itemsize} bytes)")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if kind == "BOOL" and array.size and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise InvalidRequest(f"{where}: a BOOL element must be the byte 0 or 1")
    return array.astype(dtype.newbyteorder("="), copy=False)


def split_bytes(raw: bytes, count: int, where: str) -> list[str]:
    """The ``count`` length-prefixed elements of a raw BYTES tensor, as text."""
    out: list[str] = []
    at = 0
    for _ in range(count):
        if at + 4 > len(raw):
            raise InvalidRequest(f"{where}: raw BYTES contents end before element {len(out)}")
        (length,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + length > len(raw):
            raise InvalidRequest(f"{where}: raw BYTES element {len(out)} runs past the end")
        out.append(_text(raw[at:at + length], where))
        at += length
    if at != len(raw):
        raise InvalidRequest(f"{where}: {len(raw) - at} bytes of raw BYTES contents are left "
                             f"over after {count} elements")
    return out


def _text(value: bytes, where: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"{where}: a BYTES element is not UTF-8 text") from None


def encode_outputs(response: pb.ModelInferResponse, output: Mapping[str, Any],
                   wanted: list[str] | None) -> None:
    """Add each named output (all when ``wanted`` is None) to ``response``: its datatype
    and shape in ``outputs``, its data in ``raw_output_contents`` at the same index."""
    names = list(output) if wanted is None else wanted
    for name in names:
        array = np.asarray(output[name])
        response.outputs.add(name=name, datatype=datatype(str(array.dtype)),
                             shape=array.shape)
        response.raw_output_contents.append(to_raw(array))


def to_raw(array: np.ndarray) -> bytes:
    """An array's elements as raw contents."""
    if array.dtype.kind in "OSU":
        parts = []
        for value in array.ravel().tolist():
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts += [struct.pack("<I", len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
