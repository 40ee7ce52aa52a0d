"""The binary tensor data extension against the live server: the standard client
``tritonclient.http`` with ``binary_data=True`` on inputs and outputs (outputs equal to
onnxruntime's own run of the model bytes), every datatype family in binary, and raw bodies
whose declared sizes are wrong, each a 400 naming what is wrong."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as oip
from onnx import TensorProto as T
from onnx import helper as h

from .conftest import Live
from .test_oip import direct

X = np.linspace(-2, 2, 20, dtype=np.float32).reshape(5, 4)
HEADER = "Inference-Header-Content-Length"


def typed_model() -> bytes:
    """One input and output per datatype family: strings, booleans, 64-bit integers and
    half floats (the last has no JSON form that keeps its bits)."""
    graph = h.make_graph(
        [h.make_node("Identity", ["s"], ["s_out"]), h.make_node("Not", ["b"], ["b_out"]),
         h.make_node("Mul", ["i", "i"], ["i_out"]), h.make_node("Add", ["f", "f"], ["f_out"])],
        "typed",
        [h.make_tensor_value_info("s", T.STRING, ["N"]),
         h.make_tensor_value_info("b", T.BOOL, ["N"]),
         h.make_tensor_value_info("i", T.INT64, ["N"]),
         h.make_tensor_value_info("f", T.FLOAT16, ["N"])],
        [h.make_tensor_value_info("s_out", T.STRING, ["N"]),
         h.make_tensor_value_info("b_out", T.BOOL, ["N"]),
         h.make_tensor_value_info("i_out", T.INT64, ["N"]),
         h.make_tensor_value_info("f_out", T.FLOAT16, ["N"])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def typed(live: Live) -> bytes:
    code = typed_model()
    reply = live.request("POST", "/v1/resources", "dora", content=code,
                         params={"type": "onnx", "name": "typed-binary"})
    assert reply.status_code == 201, reply.text
    return code


@pytest.fixture()
def client(live: Live) -> Iterator[oip.InferenceServerClient]:
    made = oip.InferenceServerClient(live.url.removeprefix("http://"))
    yield made
    made.close()


def auth(live: Live) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.tokens['alice']}"}


def test_the_server_lists_the_extension(live: Live) -> None:
    assert "binary_tensor_data" in live.request("GET", "/v2", "alice").json()["extensions"]


def test_tritonclient_binary_inputs_and_outputs(live: Live,
                                                client: oip.InferenceServerClient) -> None:
    tensor = oip.InferInput("x", list(X.shape), "FP32").set_data_from_numpy(X, binary_data=True)
    wanted = [oip.InferRequestedOutput("y", binary_data=True)]
    result = client.infer("clf", [tensor], outputs=wanted, request_id="b-1",
                          headers=auth(live))
    out = result.get_output("y")
    assert out["parameters"]["binary_data_size"] == 5 * 3 * 4 and "data" not in out
    assert result.get_response()["id"] == "b-1"
    np.testing.assert_array_equal(result.as_numpy("y"), direct(live.models[1], X))
    # No outputs named: the client asks binary_data_output for all of them.
    every = client.infer("clf", [tensor], model_version="1", headers=auth(live))
    assert "binary_data_size" in every.get_output("y")["parameters"]
    np.testing.assert_array_equal(every.as_numpy("y"), direct(live.models[0], X))
    # A binary input with a JSON output, and the other way round.
    as_json = client.infer("clf", [tensor], outputs=[oip.InferRequestedOutput(
        "y", binary_data=False)], headers=auth(live))
    assert "data" in as_json.get_output("y")
    np.testing.assert_allclose(as_json.as_numpy("y"), direct(live.models[1], X), rtol=1e-6)
    json_in = oip.InferInput("x", list(X.shape), "FP32").set_data_from_numpy(
        X, binary_data=False)
    binary_out = client.infer("clf", [json_in], outputs=wanted, headers=auth(live))
    np.testing.assert_array_equal(binary_out.as_numpy("y"), direct(live.models[1], X))


def test_every_datatype_family_in_binary(live: Live, typed: bytes,
                                         client: oip.InferenceServerClient) -> None:
    feeds = {
        "s": np.array(["plain", "", "naïve ✓", "x" * 300], dtype=object),
        "b": np.array([True, False, False, True]),
        "i": np.array([-(2**31), 3, 2**31, -7], dtype=np.int64),
        "f": np.array([0.5, -1.25, 65504 / 2, 1e-4], dtype=np.float16),
    }
    datatypes = {"s": "BYTES", "b": "BOOL", "i": "INT64", "f": "FP16"}
    inputs = [oip.InferInput(n, [4], datatypes[n]).set_data_from_numpy(v, binary_data=True)
              for n, v in feeds.items()]
    # s_out in JSON, the rest in binary: one response mixes both.
    outputs = [oip.InferRequestedOutput("s_out", binary_data=False),
               *(oip.InferRequestedOutput(n, binary_data=True)
                 for n in ("b_out", "i_out", "f_out"))]
    result = client.infer("typed-binary", inputs, outputs=outputs, headers=auth(live))
    session = ort.InferenceSession(typed, providers=["CPUExecutionProvider"])
    expected = dict(zip(["s_out", "b_out", "i_out", "f_out"], session.run(None, feeds),
                        strict=True))
    assert "data" in result.get_output("s_out")
    assert result.as_numpy("s_out").tolist() == list(expected["s_out"])
    for name in ("b_out", "i_out", "f_out"):
        got = result.as_numpy(name)
        assert got.dtype == expected[name].dtype
        np.testing.assert_array_equal(got, expected[name])
    # BYTES back in binary too: 4-byte little-endian lengths, then UTF-8.
    strings = client.infer("typed-binary", inputs, outputs=[oip.InferRequestedOutput(
        "s_out", binary_data=True)], headers=auth(live))
    assert [v.decode() for v in strings.as_numpy("s_out")] == list(expected["s_out"])


# -- raw bodies ------------------------------------------------------------------------------
def raw_infer(live: Live, model: str, header: dict[str, Any], tail: bytes,
              length: str | None = None) -> Any:
    text = json.dumps(header).encode()
    headers = {"Authorization": f"Bearer {live.tokens['alice']}",
               "Content-Type": "application/octet-stream"}
    headers[HEADER] = str(len(text)) if length is None else length
    if length == "":
        del headers[HEADER]
    return live.client.post(f"/v2/models/{model}/infer", content=text + tail, headers=headers)


def x_input(size: Any = 16, shape: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": shape or [1, 4], "datatype": "FP32",
                        "parameters": {"binary_data_size": size}, **extra}]}


FOUR = np.ones(4, np.float32).tobytes()
MALFORMED = [
    ("header length not a number", x_input(), FOUR, "abc", "non-negative integer"),
    ("header length negative", x_input(), FOUR, "-5", "non-negative integer"),
    ("header length past the body", x_input(), FOUR, "999", "the body has only"),
    ("header length cuts the JSON", x_input(), FOUR, "10", "not valid JSON"),
    ("header length of 40 digits", x_input(), FOUR, "9" * 40, "non-negative integer"),
    ("negative size", x_input(-16), FOUR, None, "non-negative integer"),
    ("fractional size", x_input(16.0), FOUR, None, "non-negative integer"),
    ("boolean size", x_input(True), FOUR, None, "non-negative integer"),
    ("size past the end", x_input(32), FOUR, None, "only 16 bytes"),
    ("size overflowing int64", x_input(2**70), FOUR, None, "only 16 bytes"),
    ("size not the shape's", x_input(12), FOUR[:12], None, "needs 16 bytes"),
    ("shape overflowing the size", x_input(16, [2**62, 2**62]), FOUR, None, "needs"),
    ("bytes left over", x_input(), FOUR + b"\0" * 4, None, "4 bytes of binary data"),
    ("binary data with no header length", x_input(), b"", "", "Inference-Header"),
    ("both data and a size", x_input(data=[1, 2, 3, 4]), FOUR, None, "both 'data'"),
    ("parameters not an object", {"inputs": [{"name": "x", "shape": [1, 4], "datatype":
                                              "FP32", "parameters": [16]}]},
     FOUR, None, "'parameters' must be an object"),
    ("binary_data not a boolean", {**x_input(), "outputs": [
        {"name": "y", "parameters": {"binary_data": "yes"}}]}, FOUR, None, "true or false"),
    ("binary_data_output not a boolean", {**x_input(), "parameters": {
        "binary_data_output": 1}}, FOUR, None, "true or false"),
]


@pytest.mark.parametrize(("header", "tail", "length", "message"),
                         [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_binary_bodies_are_400(live: Live, header: dict[str, Any], tail: bytes,
                                         length: str | None, message: str) -> None:
    reply = raw_infer(live, "clf", header, tail, length)
    assert reply.status_code == 400, reply.text
    assert reply.json()["kind"] == "invalid_request" and message in reply.json()["error"]


def strings(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def typed_body(s: bytes, b: bytes = b"\1\0", shape: int = 2) -> tuple[dict[str, Any], bytes]:
    i = np.arange(shape, dtype="<i8").tobytes()
    f = np.ones(shape, dtype="<f2").tobytes()
    tensors = [("s", "BYTES", s), ("b", "BOOL", b), ("i", "INT64", i), ("f", "FP16", f)]
    return ({"inputs": [{"name": n, "datatype": d, "shape": [shape],
                         "parameters": {"binary_data_size": len(data)}}
                        for n, d, data in tensors]}, b"".join(data for *_, data in tensors))


@pytest.mark.parametrize(("s", "b", "message"), [
    (strings(b"ab") + struct.pack("<I", 99) + b"cd", b"\1\0", "declares 99 bytes"),
    (strings(b"ab") + b"\0\0", b"\1\0", "has no 4-byte length"),
    (strings(b"ab"), b"\1\0", "2 BYTES elements need at least 8 bytes"),
    (strings(b"ab", b"cd") + b"!", b"\1\0", "1 bytes are left after the 2 BYTES"),
    (strings(b"\xff\xfe", b"ok"), b"\1\0", "not UTF-8"),
    (strings(b"ab", b"cd"), b"\1\2", "the byte 0 or 1"),
], ids=["element past its tensor", "a cut length", "too few elements", "trailing bytes",
        "not UTF-8", "bool byte 2"])
def test_malformed_bytes_and_bool_tensors_are_400(live: Live, typed: bytes, s: bytes, b: bytes,
                                                  message: str) -> None:
    header, tail = typed_body(s, b)
    reply = raw_infer(live, "typed-binary", header, tail)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]


def test_a_shape_claiming_more_strings_than_bytes_is_400(live: Live, typed: bytes) -> None:
    header, tail = typed_body(strings(b"ab", b"cd"))
    header["inputs"][0]["shape"] = [2**62]
    reply = raw_infer(live, "typed-binary", header, tail)
    assert reply.status_code == 400 and "need at least" in reply.json()["error"]


def test_an_id_that_is_not_a_string_is_400(live: Live) -> None:
    for bad in ("NaN", "[1]", "7"):
        text = json.dumps(x_input()).encode()[:-1] + b', "id": ' + bad.encode() + b"}"
        reply = live.client.post("/v2/models/clf/infer", content=text + FOUR, headers={
            "Authorization": f"Bearer {live.tokens['alice']}", HEADER: str(len(text))})
        assert reply.status_code == 400 and "'id' must be a string" in reply.json()["error"]


def test_a_raw_binary_body_and_response(live: Live, typed: bytes) -> None:
    """The bytes on the wire, without a client library: the response's header length points
    at the binary part, and the outputs' data follow in their order."""
    header, tail = typed_body(strings(b"hi", "ü".encode()))
    header["parameters"] = {"binary_data_output": True}
    header["outputs"] = [{"name": "i_out"}, {"name": "s_out"}]
    reply = raw_infer(live, "typed-binary", header, tail)
    assert reply.status_code == 200, reply.text
    size = int(reply.headers[HEADER])
    meta = json.loads(reply.content[:size])
    sizes = [o["parameters"]["binary_data_size"] for o in meta["outputs"]]
    assert [o["name"] for o in meta["outputs"]] == ["i_out", "s_out"] and sizes == [16, 12]
    data = reply.content[size:]
    assert len(data) == sum(sizes)
    assert np.frombuffer(data[:16], "<i8").tolist() == [0, 1]
    assert data[16:] == strings(b"hi", "ü".encode())
    # The server is unhurt by everything above.
    assert raw_infer(live, "clf", x_input(), FOUR).status_code == 200
