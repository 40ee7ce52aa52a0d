"""The ``security-request`` validator: sizes, names and bounds of a request."""

from __future__ import annotations

import pytest

from coordinator_core.services.security.request import RequestLimitsConfig, RequestValidator
from coordinator_hookspecs import ErrorKind, ExecutionRequest, InvalidRequest, ResourceInfo

RES = ResourceInfo(id="ab" * 32, type="wasm")


def check(validator: RequestValidator, **fields: object) -> None:
    validator.validate_execution(ExecutionRequest(resource_id=RES.id, **fields), RES)


def refused(validator: RequestValidator, **fields: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        check(validator, **fields)
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.source == "security-request"
    return info.value


def test_ordinary_requests_pass() -> None:
    v = RequestValidator()
    check(v)
    check(v, caller="alice@example.org", entry="transfer", input=b"x" * 1000,
          fee_limit=1_000_000, timeout=2.0, args=(1, 2))
    check(v, input={"x": [[1.0, 2.0], [3.0, 4.0]], "y": b"\x00" * 16})
    check(v, input="text input", entry="dense/BiasAdd:0")
    check(v, input=memoryview(b"abc"))


def test_input_size_cap_names_the_field() -> None:
    v = RequestValidator(RequestLimitsConfig(max_input_bytes=100))
    check(v, input=b"x" * 100)
    err = refused(v, input=b"x" * 101)
    assert "input is 101 bytes" in err.message and "max_input_bytes" in err.message
    assert "input" in refused(v, input="é" * 60).message  # 120 bytes of UTF-8


def test_mapping_inputs_count_elements_and_bytes() -> None:
    import numpy as np  # a dev dependency of the workspace
    v = RequestValidator(RequestLimitsConfig(max_input_elements=10, max_input_bytes=1000,
                                             max_inputs=2))
    check(v, input={"a": np.zeros(10, dtype="float32")})
    err = refused(v, input={"a": np.zeros(6), "b": np.zeros(5)})
    assert "'b'" in err.message and "max_input_elements" in err.message
    err = refused(v, input={"a": [[0.0] * 6] * 2})
    assert "max_input_elements" in err.message
    assert "max_inputs" in refused(v, input={"a": b"", "b": b"", "c": b""}).message
    err = refused(RequestValidator(RequestLimitsConfig(max_input_bytes=64)),
                  input={"a": np.zeros(9, dtype="float64")})
    assert "72 bytes" in err.message


def test_the_json_form_of_a_tensor_is_measured_by_its_data() -> None:
    # {"data": ..., "shape": ...} is an input form the ONNX engine documents; refusing it
    # here would make the documented form unusable with the built-in validators on.
    v = RequestValidator(RequestLimitsConfig(max_input_elements=4))
    check(v, input={"x": {"data": [[1, 2], [3, 4]], "shape": [2, 2], "dtype": "float32"}})
    err = refused(v, input={"x": {"data": [1, 2, 3, 4, 5], "shape": [5]}})
    assert "'x'" in err.message and "max_input_elements" in err.message
    assert "got dict" in refused(v, input={"x": {"data": {"data": [1]}}}).message


def test_hostile_inputs_are_typed_errors() -> None:
    v = RequestValidator(RequestLimitsConfig(max_input_elements=1000))
    assert "got int" in refused(v, input=42).message
    assert "input names" in refused(v, input={1: b""}).message
    assert "got object" in refused(v, input={"a": object()}).message
    deep: list[object] = []
    for _ in range(100_000):  # far deeper than the recursion limit
        deep = [deep]
    check(v, input={"a": deep})
    err = refused(v, input={"a": [[0] * 10_000]})
    assert "max_input_elements" in err.message


def test_entry_name_format_and_length() -> None:
    v = RequestValidator(RequestLimitsConfig(max_entry_length=8))
    check(v, entry="run")
    assert "8" in refused(v, entry="a" * 9).message
    assert "not a valid entry name" in refused(v, entry="1bad").message
    assert "not a valid entry name" in refused(v, entry="a b").message
    assert "must be a string" in refused(v, entry=b"run").message


@pytest.mark.parametrize("caller", ["", "a b", "x" * 129, "semi;colon", "ü"])
def test_caller_id_format(caller: str) -> None:
    err = refused(RequestValidator(), caller=caller)
    assert "caller" in err.message and "caller_pattern" in err.message


def test_caller_memo_stays_bounded() -> None:
    v = RequestValidator()
    for i in range(5000):
        check(v, caller=f"user{i}")
    assert len(v._good_callers) <= 4096
    refused(v, caller="bad caller")


@pytest.mark.parametrize("fee", [0, -1, 10**13, True, 1.5, "100"])
def test_fee_limit_bounds(fee: object) -> None:
    v = RequestValidator(RequestLimitsConfig(max_fee_limit=10**12))
    assert "fee_limit" in refused(v, fee_limit=fee).message


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_timeout_must_be_positive_and_finite(timeout: object) -> None:
    assert "timeout" in refused(RequestValidator(), timeout=timeout).message


def test_timeout_bound_when_configured() -> None:
    check(RequestValidator(), timeout=1e6)  # unbounded here: the core caps it
    v = RequestValidator(RequestLimitsConfig(max_timeout=10.0))
    check(v, timeout=10.0)
    assert "max_timeout" in refused(v, timeout=10.5).message


def test_args_count() -> None:
    v = RequestValidator(RequestLimitsConfig(max_args=2))
    check(v, args=(1, 2))
    assert "max_args" in refused(v, args=(1, 2, 3)).message


def test_bad_config_is_refused_naming_the_key() -> None:
    with pytest.raises(InvalidRequest, match="caller_pattern"):
        RequestValidator(RequestLimitsConfig(caller_pattern="("))
    with pytest.raises(InvalidRequest, match="max_input_bytes"):
        RequestValidator(RequestLimitsConfig(max_input_bytes=0))
    with pytest.raises(InvalidRequest, match="max_timeout"):
        RequestValidator(RequestLimitsConfig(max_timeout=-1))
