"""What an execution validator sees as ``request.input`` for an ONNX model.

Validators run before the engine checks the input against the model signature, so they get
the caller's value as given (docs/writing-validators.md, "What you can read"): this test pins
that contract for the Python API, for ``--input`` JSON and for ``--input-file`` .npz, and
shows the engine still converts every one of them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from coordinator_hookspecs import ExecutionRequest, ValidatorRecord, hookimpl


def add_one() -> bytes:
    graph = h.make_graph([h.make_node("Add", ["x", "one"], ["y"])], "add_one",
                         [h.make_tensor_value_info("x", T.FLOAT, [2])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2])],
                         [h.make_tensor("one", T.FLOAT, [1], [1.0])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class Recorder:
    """Records the input of every execution it is asked about, and admits it."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def validate_execution(self, request: ExecutionRequest, resource: Any) -> None:
        self.seen.append(request.input)


@pytest.fixture
def setup(make_coordinator: Callable[..., Any]) -> tuple[Any, str, Recorder]:
    recorder = Recorder()

    class Plugin:
        @hookimpl
        def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
            return [ValidatorRecord(name="recorder", validator=recorder, applies_to={"onnx"})]

    coord = make_coordinator(Plugin(), entry_points=True)
    return coord, coord.deploy(add_one(), "onnx"), recorder


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_validators_see_the_callers_value_unconverted(setup: tuple[Any, str, Recorder]) -> None:
    coord, rid, recorder = setup
    engine = coord.engine_for("onnx")
    array = np.array([1.0, 2.0], np.float32)
    inputs = [
        {"x": array},                                       # Python API, an array
        {"x": [1, 2]},                                      # Python API, nested lists
        {"x": {"data": [1, 2], "shape": [2]}},              # the JSON-style dict
        '{"x": [1, 2]}',                                    # JSON text, not decoded yet
        engine.decode_cli_input('{"x": [1, 2]}', None),     # what `exec --input` passes
        engine.decode_cli_input(npz(x=array), "x.npz"),     # what `exec --input-file` passes
    ]
    for value in inputs:
        result = coord.execute(ExecutionRequest(resource_id=rid, input=value))
        assert result.ok, result.error
        np.testing.assert_allclose(result.output["y"], [2.0, 3.0])
    assert len(recorder.seen) == len(inputs)
    api_array, api_list, api_dict, text, cli_json, cli_npz = recorder.seen
    assert api_array["x"] is array
    assert api_list == {"x": [1, 2]} and type(api_list["x"]) is list
    assert api_dict == {"x": {"data": [1, 2], "shape": [2]}}
    assert text == '{"x": [1, 2]}'
    assert cli_json == {"x": [1, 2]} and type(cli_json["x"]) is list
    assert isinstance(cli_npz["x"], np.ndarray) and cli_npz["x"].dtype == np.float32
