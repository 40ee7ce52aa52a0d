"""JSON / .npz input decoding and JSON output encoding for the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from coordinator_engine_onnxruntime import OnnxConfig, OnnxEngine, decode_cli_input, encode_output
from coordinator_hookspecs import InvalidRequest


def test_json_object_is_decoded() -> None:
    assert decode_cli_input('{"x": [[1, 2]]}') == {"x": [[1, 2]]}
    assert decode_cli_input(b'{"x": 1}') == {"x": 1}
    assert decode_cli_input("  ") == {}


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "JSON object"),
    ("{not json", "JSON object of input name"),
    (b"\xff\xfe", "JSON object of input name"),
])
def test_bad_json_is_invalid_request(text: str | bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode_cli_input(text)


def test_npz_is_decoded_by_name_or_signature() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.arange(6, dtype=np.float32).reshape(2, 3), M=np.array(3))
    raw = buffer.getvalue()
    for decoded in (decode_cli_input(raw), decode_cli_input(raw, filename="in.NPZ")):
        assert set(decoded) == {"x", "M"}
        assert decoded["x"].dtype == np.float32 and decoded["x"].shape == (2, 3)


def test_npz_with_pickles_or_garbage_is_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InvalidRequest, match="not a readable .npz"):
        decode_cli_input(buffer.getvalue())
    with pytest.raises(InvalidRequest, match="not a readable .npz"):
        decode_cli_input(b"PK\x03\x04 truncated")


def test_output_encodes_to_strict_json() -> None:
    output = {
        "y": np.array([[0.25, np.nan], [np.inf, -np.inf]], np.float32),
        "ids": np.array([1, 2], np.int64),
        "label": np.array(["cat"], dtype=object),
        "maps": [{1: np.float32(0.5)}],
    }
    encoded = encode_output(output)
    text = json.dumps(encoded, allow_nan=False)
    assert json.loads(text) == {"y": [[0.25, "nan"], ["inf", "-inf"]], "ids": [1, 2],
                                "label": ["cat"], "maps": [{"1": 0.5}]}


def test_engine_exposes_the_cli_helpers() -> None:
    engine = OnnxEngine(OnnxConfig())
    assert engine.decode_cli_input('{"x": [1]}') == {"x": [1]}
    assert engine.encode_output({"y": np.array([1.0])}) == {"y": [1.0]}
