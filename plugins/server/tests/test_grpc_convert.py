"""gRPC tensor conversion on its own, with the standard client's messages
(``tritonclient.grpc.service_pb2``, wire-identical to the server's) and the client's own
encoders and decoders: every datatype's raw and typed forms, and the refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import InferResult
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import serialize_byte_tensor

from coordinator_hookspecs import InvalidRequest
from coordinator_server.grpc import convert

WORDS = np.array([["a", "héllo"], ["", "z" * 300]], dtype=object)


def request_of(datatype: str, shape: list[int], raw: bytes | None = None,
               **contents: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="t", datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3), np.array([[1.5, -2]], dtype=np.float64),
    np.array([np.iinfo(np.int64).min, 7]), np.array([2**64 - 1], dtype=np.uint64),
    np.array([-128, 127], dtype=np.int8), np.array([True, False, True]),
    np.array([0.5, 65504], dtype=np.float16), np.zeros((0, 4), np.float32),
])
def test_raw_inputs_decode_to_the_array_the_client_sent(array: np.ndarray) -> None:
    from coordinator_server.tensors import datatype

    kind = datatype(str(array.dtype))
    [(name, got)] = convert.decode_inputs(
        request_of(kind, list(array.shape), raw=array.tobytes())).items()
    assert name == "t" and got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


def test_raw_bytes_are_the_clients_serialisation_both_ways() -> None:
    raw = serialize_byte_tensor(WORDS).item()
    assert convert.to_raw(WORDS) == raw
    got = convert.decode_inputs(request_of("BYTES", [2, 2], raw=raw))["t"]
    assert got.dtype == object and got.tolist() == WORDS.tolist()


@pytest.mark.parametrize("datatype, field, values, dtype", [
    ("INT8", "int_contents", [-3, 4], np.int8), ("UINT16", "uint_contents", [0, 65535],
                                                 np.uint16),
    ("INT64", "int64_contents", [2**40, -1], np.int64),
    ("UINT64", "uint64_contents", [2**64 - 1, 0], np.uint64),
    ("BOOL", "bool_contents", [True, False], np.bool_),
    ("FP64", "fp64_contents", [0.1, 1e300], np.float64),
    ("BYTES", "bytes_contents", [b"x", "é".encode()], object),
])
def test_typed_contents_of_each_datatype(datatype: str, field: str, values: list[Any],
                                         dtype: Any) -> None:
    got = convert.decode_inputs(request_of(datatype, [2], **{field: values}))["t"]
    assert got.dtype == np.dtype(dtype)
    expected = [v.decode() for v in values] if datatype == "BYTES" else values
    assert got.tolist() == expected


@pytest.mark.parametrize("request_, says", [
    (request_of("INT8", [2], int_contents=[1, 300]), "outside the range of INT8"),
    (request_of("FP16", [1], fp32_contents=[1.0]), "FP16 has no typed contents"),
    (request_of("FP32", [2], fp32_contents=[1.0]), "1 values do not fill shape [2]"),
    (request_of("BOOL", [2], raw=b"\x00\x02"), "must be the byte 0 or 1"),
    (request_of("BYTES", [1], raw=b"\x01\x00\x00\x00ab"), "1 bytes of raw BYTES contents"),
    (request_of("BYTES", [2], raw=b"\x01\x00\x00\x00a"), "end before element 1"),
    (request_of("BYTES", [1], bytes_contents=[b"\xff"]), "not UTF-8"),
    (request_of("INT32", [40], raw=b""), "0 bytes of raw contents"),
    (request_of("FP32", [1] * 33, raw=b"\x00" * 4), "at most 32"),
    (request_of("", [1], fp32_contents=[1.0]), "unknown datatype ''"),
])
def test_refusals_name_what_is_wrong(request_: pb.ModelInferRequest, says: str) -> None:
    with pytest.raises(InvalidRequest, match="input 't'") as caught:
        convert.decode_inputs(request_)
    assert says in caught.value.message


def test_an_input_without_a_name_or_given_twice() -> None:
    nameless = request_of("FP32", [1], fp32_contents=[1.0])
    nameless.inputs[0].name = ""
    with pytest.raises(InvalidRequest, match=r"inputs\[0\] has no 'name'"):
        convert.decode_inputs(nameless)
    twice = request_of("FP32", [1], fp32_contents=[1.0])
    twice.inputs.append(twice.inputs[0])
    with pytest.raises(InvalidRequest, match="is given twice"):
        convert.decode_inputs(twice)


def test_outputs_are_raw_and_read_back_by_the_client() -> None:
    outputs = {"p": np.arange(6, dtype=np.float32).reshape(2, 3),
               "k": np.array([[3, -1]], dtype=np.int64), "ok": np.array([True, False]),
               "w": WORDS, "h": np.array([1.5], dtype=np.float16)}
    response = pb.ModelInferResponse()
    convert.encode_outputs(response, outputs, None)
    assert [o.name for o in response.outputs] == list(outputs)
    assert [o.datatype for o in response.outputs] == ["FP32", "INT64", "BOOL", "BYTES", "FP16"]
    result = InferResult(response)
    for name, array in outputs.items():
        got = result.as_numpy(name)
        if name == "w":
            got = np.vectorize(lambda b: b.decode())(got).astype(object)
        np.testing.assert_array_equal(got, array)
    only = pb.ModelInferResponse()
    convert.encode_outputs(only, outputs, ["k"])
    assert [o.name for o in only.outputs] == ["k"] and len(only.raw_output_contents) == 1


def test_parameters_both_ways() -> None:
    response = pb.ModelInferResponse()
    for name, value in (("b", True), ("i", -5), ("f", 0.25), ("s", "text")):
        convert.set_parameter(response.parameters, name, value)
    assert convert.parameters_dict(response.parameters) == {"b": True, "i": -5, "f": 0.25,
                                                            "s": "text"}
    assert convert.parameter_value(pb.InferParameter()) is None
