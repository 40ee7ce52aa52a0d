"""Hybrid execution (issue 8): a WASM contract calls a model through ``model_infer``.

Real engines (wasmtime, onnxruntime), the real store and the whole pipeline; the example
contracts and model of ``examples/`` plus two small test contracts: ``RELAY`` (passes a
payload to any resource and returns the code and output) and ``WRITER`` (writes state).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.host_functions import hybrid
from coordinator_core.host_functions.codec import EncodingError, decode_tensors, encode_tensors
from coordinator_core.plugin_host.builtins import BUILTIN_PLUGINS
from coordinator_hookspecs import AccessPolicy, AuditRecord, SecurityRejected, Status

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HYBRID = ("hybrid", "coordinator_core.host_functions.hybrid")
BUILTINS = BUILTIN_PLUGINS if HYBRID in BUILTIN_PLUGINS else (*BUILTIN_PLUGINS, HYBRID)

#: input: mode:u8 ('t' = trap after the call) | out_cap:u32 | rid:64 | payload
#: output: code:i32 | the nested output (when code > 0). Writes "relayed" = mode first.
RELAY = """
(module
  (import "env" "input_len" (func $input_len (result i32)))
  (import "env" "input_read" (func $input_read (param i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "model_infer" (func $infer (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "relayed")
  (func (export "main")
    (local $n i32) (local $rc i32)
    (local.set $n (call $input_len))
    (call $input_read (i32.const 1024))
    (call $storage_set (i32.const 0) (i32.const 7) (i32.const 1024) (i32.const 1))
    (local.set $rc (call $infer (i32.const 1029) (i32.const 64) (i32.const 1093)
                               (i32.sub (local.get $n) (i32.const 69))
                               (i32.const 8196) (i32.load (i32.const 1025))))
    (i32.store (i32.const 8192) (local.get $rc))
    (call $output_write (i32.const 8192)
          (i32.add (i32.const 4) (select (local.get $rc) (i32.const 0)
                                         (i32.gt_s (local.get $rc) (i32.const 0)))))
    (if (i32.eq (i32.load8_u (i32.const 1024)) (i32.const 116)) (then unreachable))))
"""

WRITER = """
(module
  (import "env" "input_len" (func $input_len (result i32)))
  (import "env" "input_read" (func $input_read (param i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "emit_event" (func $emit_event (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "written")
  (func (export "main")
    (local $n i32)
    (local.set $n (call $input_len))
    (call $input_read (i32.const 64))
    (call $storage_set (i32.const 0) (i32.const 7) (i32.const 64) (local.get $n))
    (call $emit_event (i32.const 64) (local.get $n))
    (call $output_write (i32.const 0) (i32.const 7))))
"""


def relay_input(rid: str, payload: bytes = b"", *, trap: bool = False, cap: int = 256) -> bytes:
    return (b"t" if trap else b"r") + struct.pack("<I", cap) + rid.encode() + payload


def open_coordinator(path: Path, **overrides: Any) -> Coordinator:
    return Coordinator.open(data_dir=path, builtins=BUILTINS, overrides=overrides or None)


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    with open_coordinator(tmp_path / "data") as opened:
        yield opened


def deploy_wat(coord: Coordinator, text: str, *caps: str, **kw: Any) -> str:
    return coord.deploy(text, "wasm", source_format="wat", capabilities=caps, **kw)


class Bank:
    """The example hybrid contract and risk model, deployed and funded."""

    def __init__(self, coord: Coordinator, model_policy: AccessPolicy | None = None) -> None:
        self.coord = coord
        self.hybrid = deploy_wat(coord, (EXAMPLES / "hybrid.wat").read_text(), "storage",
                                 "events", "models", owner="treasury")
        self.model = coord.deploy(
            (EXAMPLES / "risk_model.onnx").read_bytes(), "onnx", owner="risk-team",
            policy=model_policy or AccessPolicy(
                public=False, allow=frozenset({"alice", "bob", "contract:" + self.hybrid})))
        assert self.call("treasury", "configure", self.model.encode()).ok
        for name in ("alice", "bob"):
            assert self.call("treasury", "mint", struct.pack("<Q", 10_000) + name.encode()).ok

    def call(self, caller: str, entry: str, data: bytes, **kw: Any) -> Any:
        return self.coord.execute(ExecutionRequest(resource_id=self.hybrid, caller=caller,
                                                   entry=entry, input=data, **kw))

    def transfer(self, caller: str, amount: int, to: str, **kw: Any) -> Any:
        return self.call(caller, "transfer", struct.pack("<Q", amount) + to.encode(), **kw)

    def balance(self, name: str) -> int:
        value = self.coord.state(self.hybrid, b"bal:" + name.encode())
        return struct.unpack("<Q", value)[0] if value else 0


def children(coord: Coordinator, parent_id: str) -> list[AuditRecord]:
    return [r for r in coord.store.audit_records()
            if r.record_kind == "execution" and r.parent_id == parent_id]


def test_hybrid_transfer_approved_and_denied_by_the_model(coord: Coordinator) -> None:
    bank = Bank(coord)
    approved = bank.transfer("alice", 30, "bob")
    assert approved.status is Status.SUCCEEDED, approved.error
    assert approved.output == b"approved"
    assert (bank.balance("alice"), bank.balance("bob")) == (9_970, 10_030)
    (child,) = children(coord, approved.execution_id)
    assert (child.resource_id, child.caller, child.status) == (bank.model, "alice", "succeeded")
    assert child.detail["depth"] == 1

    denied = bank.transfer("alice", 9_000, "bob")  # most of the balance: P(fraud) > 0.5
    assert denied.status is Status.SUCCEEDED, denied.error
    assert denied.output == b"denied"
    assert (bank.balance("alice"), bank.balance("bob")) == (9_970, 10_030)
    kinds = [e["payload"][:1] for e in coord.events(bank.hybrid)]
    assert kinds[-2:] == [b"T", b"D"]
    assert coord.store.verify().ok


def test_a_contract_importing_model_infer_without_models_is_refused_at_deploy(
        coord: Coordinator) -> None:
    text = (EXAMPLES / "hybrid.wat").read_text()
    with pytest.raises(SecurityRejected, match="models"):
        deploy_wat(coord, text, "storage", "events")
    assert coord.resources() == []
    record = list(coord.store.audit_records())[-1]
    assert (record.record_kind, record.status, record.error_kind) == (
        "deploy", "rejected", "security_rejected")


def test_nested_fee_is_charged_to_the_parent(coord: Coordinator) -> None:
    bank = Bank(coord)
    result = bank.transfer("alice", 30, "bob")
    (child,) = children(coord, result.execution_id)
    assert child.fee_used == coord.engine_for("onnx").fee(2, 3) > 0
    assert result.fee_used >= child.fee_used + hybrid.HybridConfig().fee_per_call



def test_a_nested_call_gets_only_the_parents_remaining_fee(tmp_path: Path) -> None:
    # With a model_infer fee of 10**6 and a model fee of about 10**5, a fee limit of 10**6 +
    # the model's fee leaves less than the model's fee when model_infer is reached (the
    # contract spent a few thousand before):
    # the nested call fails as fee_exhausted, model_infer returns -3, and the contract
    # refuses to go on (trap). Nothing moves.
    big = 10**6
    with open_coordinator(tmp_path / "d", hybrid={"fee_per_call": big},
                          onnxruntime={"fee_base": big // 10}) as coord:
        bank = Bank(coord)
        model_fee = coord.engine_for("onnx").fee(2, 3)
        starved = bank.transfer("alice", 30, "bob", fee_limit=big + model_fee)
        assert starved.status is Status.FAILED and starved.error.kind.value == "trap"
        (child,) = children(coord, starved.execution_id)
        assert (child.status, child.error_kind) == ("failed", "fee_exhausted")
        assert (bank.balance("alice"), bank.balance("bob")) == (10_000, 10_000)
        assert bank.transfer("alice", 30, "bob", fee_limit=big + 10 * model_fee).ok


def test_quota_is_charged_to_the_original_caller_once(tmp_path: Path) -> None:
    with open_coordinator(tmp_path / "d", **{"quota-fee": {"budget": 10**9}}) as coord:
        bank = Bank(coord)
        result = bank.transfer("alice", 30, "bob")
        assert result.ok
        spent = coord.metrics()["quota"]["quota-fee"]["callers"]["alice"]["spent"]
        assert spent == result.fee_used  # the nested fee is inside it, not charged twice


def test_a_failed_commit_discards_the_nested_executions_too(coord: Coordinator) -> None:
    """The store refuses the top level's commit: nothing is written, and the nested call
    that succeeded is failed in the log and in status() as well, not left 'succeeded'."""
    relay = deploy_wat(coord, RELAY, "storage", "models")
    writer = deploy_wat(coord, WRITER, "storage", "events")
    finish = coord.store.finish

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk unplugged")

    coord.store.finish = broken  # type: ignore[method-assign]
    try:
        failed = coord.execute(ExecutionRequest(
            resource_id=relay, caller="alice", input=relay_input(writer, b"hello")))
    finally:
        coord.store.finish = finish  # type: ignore[method-assign]
    assert failed.status is Status.FAILED and failed.error is not None
    assert failed.error.kind.value == "internal" and "disk unplugged" in failed.error.message
    (child,) = children(coord, failed.execution_id)
    assert child.status == "failed" and "discarded with its parent" in (child.message or "")
    live = coord.status(child.execution_id)
    assert live.status is Status.FAILED and "discarded with its parent" in (live.message or "")
    assert coord.state(writer) == {} and coord.events(writer) == []
    assert coord.store.verify().ok


def test_a_parent_trap_after_a_successful_nested_call_leaves_no_state(
        coord: Coordinator) -> None:
    relay = deploy_wat(coord, RELAY, "storage", "models")
    writer = deploy_wat(coord, WRITER, "storage", "events")

    failed = coord.execute(ExecutionRequest(
        resource_id=relay, caller="alice", input=relay_input(writer, b"hello", trap=True)))
    assert failed.status is Status.FAILED
    assert failed.error is not None and failed.error.kind.value == "trap"
    (child,) = children(coord, failed.execution_id)
    # it ran to success, but its writes were discarded with its parent's: the log says so
    assert (child.status, child.resource_id) == ("failed", writer)
    assert "discarded with its parent" in (child.message or "")
    # ... and so does its live status, not the success it reported to its parent
    live = coord.status(child.execution_id)
    assert live.status is Status.FAILED and "discarded with its parent" in (live.message or "")
    assert coord.state(relay) == {} and coord.state(writer) == {}
    assert coord.events(writer) == []

    kept = coord.execute(ExecutionRequest(
        resource_id=relay, caller="alice", input=relay_input(writer, b"hello")))
    assert kept.ok, kept.error
    assert kept.output == struct.pack("<i", 7) + b"written"
    assert coord.state(writer) == {b"written": b"hello"}
    assert coord.state(relay) == {b"relayed": b"r"}
    assert [e["payload"] for e in coord.events(writer)] == [b"hello"]
    assert coord.store.verify().ok


def relays(coord: Coordinator, count: int) -> list[str]:
    """``count`` distinct relay contracts (a data segment each, so each has its own id):
    a nested call back into a stateful contract of the same tree is refused."""
    return [deploy_wat(coord, RELAY.replace(
        '(data (i32.const 0) "relayed")',
        f'(data (i32.const 0) "relayed") (data (i32.const 60000) "relay {n}")'),
        "storage", "models") for n in range(count)]


def chain(targets: list[str]) -> bytes:
    payload = b""
    for rid in reversed(targets):
        payload = relay_input(rid, payload)
    return payload


def test_depth_limit_is_enforced(coord: Coordinator, tmp_path: Path) -> None:
    top, *targets = relays(coord, 5)
    result = coord.execute(ExecutionRequest(resource_id=top, caller="alice",
                                            input=chain(targets)))
    assert result.ok, result.error
    # depth 0 -> 1 -> 2; the relay at depth 2 gets DEPTH_LIMIT (default max_depth 2)
    assert result.output == struct.pack("<iii", 8, 4, hybrid.DEPTH_LIMIT)
    (first,) = children(coord, result.execution_id)
    (second,) = children(coord, first.execution_id or "")
    assert (first.detail["depth"], second.detail["depth"]) == (1, 2)
    assert children(coord, second.execution_id or "") == []

    with open_coordinator(tmp_path / "shallow", coordinator={"max_depth": 1}) as shallow:
        top, *targets = relays(shallow, 5)
        result = shallow.execute(ExecutionRequest(resource_id=top, caller="alice",
                                                  input=chain(targets)))
        assert result.output == struct.pack("<ii", 4, hybrid.DEPTH_LIMIT)


def test_a_nested_call_back_into_its_own_stateful_tree_is_refused(coord: Coordinator) -> None:
    """Found in review: the inner call would read committed state, not the outer call's
    pending writes, and one of the two writes would be lost."""
    (relay,) = relays(coord, 1)
    result = coord.execute(ExecutionRequest(resource_id=relay, caller="alice",
                                            input=chain([relay, relay])))
    assert result.ok, result.error
    assert result.output == struct.pack("<i", hybrid.BAD_INPUT)
    (child,) = children(coord, result.execution_id)
    assert child.error_kind == "invalid_request" and "re-entrant" in (child.message or "")


def test_the_model_policy_must_admit_the_calling_contract(coord: Coordinator) -> None:
    bank = Bank(coord, model_policy=AccessPolicy(public=False, allow=frozenset({"alice"})))
    refused = bank.transfer("alice", 30, "bob")  # alice may, the contract may not
    assert refused.status is Status.FAILED  # the contract traps on DENIED (fail closed)
    (child,) = children(coord, refused.execution_id)
    assert (child.error_kind, child.detail["source"]) == ("security_rejected", "security-nested")
    assert "contract:" + bank.hybrid in (child.message or "")

    # The caller is checked too: bob is not on the model's allow list.
    relay = deploy_wat(coord, RELAY, "storage", "models")
    coord.set_policy(bank.model, AccessPolicy(public=False, allow=frozenset(
        {"alice", "contract:" + relay})), caller="risk-team")
    x = tensor_set(x=np.array([[0.01, 0.01, 0.0]], np.float32))
    for caller, code in (("alice", 25), ("bob", hybrid.DENIED)):
        result = coord.execute(ExecutionRequest(resource_id=relay, caller=caller,
                                                input=relay_input(bank.model, x)))
        assert struct.unpack_from("<i", result.output)[0] == code


def tensor_set(**arrays: np.ndarray) -> bytes:
    return encode_tensors(arrays)


def test_model_infer_codes_and_the_tensor_encoding(coord: Coordinator) -> None:
    model = coord.deploy((EXAMPLES / "risk_model.onnx").read_bytes(), "onnx")
    relay = deploy_wat(coord, RELAY, "storage", "models")

    def code_and_output(rid: str, payload: bytes, cap: int = 256) -> tuple[int, bytes]:
        result = coord.execute(ExecutionRequest(resource_id=relay, caller="alice",
                                                input=relay_input(rid, payload, cap=cap)))
        assert result.ok, result.error
        return struct.unpack_from("<i", result.output)[0], result.output[4:]

    x = np.array([[0.03, 0.003, 0.0], [9.0, 0.9, 1.0]], np.float32)
    code, out = code_and_output(model, tensor_set(x=x))
    assert code == len(out) == 17 + 16
    probs = decode_tensors(out)["probs"]
    assert probs.dtype == np.float32 and probs.shape == (2, 2)
    assert probs[0, 1] < 0.1 < 0.9 < probs[1, 1]

    assert code_and_output(model, tensor_set(x=x), cap=20)[0] == hybrid.OUTPUT_TOO_LARGE
    assert code_and_output(model, b"\x01\x01x")[0] == hybrid.BAD_INPUT  # cut short
    assert code_and_output(model, tensor_set(x=x.astype(np.float64)))[0] == hybrid.BAD_INPUT
    assert code_and_output(model, tensor_set(y=x))[0] == hybrid.BAD_INPUT  # unknown input
    assert code_and_output("f" * 64, b"")[0] == hybrid.NOT_FOUND
    assert code_and_output("Z" * 64, b"")[0] == hybrid.BAD_INPUT  # not a resource id
    # each failed nested call left its own audit record, linked to its parent
    records = [r for r in coord.store.audit_records() if r.parent_id is not None]
    assert {r.error_kind for r in records} >= {"invalid_request", None}


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "uint8", "bool"])
def test_tensor_encoding_round_trips(dtype: str) -> None:
    array = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    data = encode_tensors({"t": array, "s": np.array(7, np.int64)})
    assert data[:4] == b"\x02\x01t" + bytes((hybrid_codec_code(dtype),))
    decoded = decode_tensors(data)
    assert decoded["t"].dtype == array.dtype and (decoded["t"] == array).all()
    assert decoded["s"].shape == () and int(decoded["s"]) == 7


def hybrid_codec_code(dtype: str) -> int:
    from coordinator_core.host_functions.codec import CODE_OF_DTYPE

    return CODE_OF_DTYPE[dtype]


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty input"),
    (b"\x01\x00", "empty or cut short"),
    (b"\x01\x01x\x63\x00", "dtype code 99"),
    (b"\x01\x01x\x01\x09", "9 dimensions"),
    (b"\x01\x01x\x01\x01\x02\x00\x00\x00\x00\x00\x80\x3f", "needs 8 data bytes"),
    (b"\x01\x01x\x01\x00\x00\x00\x80\x3f\x00", "1 bytes follow"),
    (b"\x02\x01x\x01\x00\x00\x00\x80\x3f\x01x\x01\x00\x00\x00\x80\x3f", "occurs twice"),
    (b"\x01\x01\xff\x01\x00\x00\x00\x80\x3f", "not UTF-8"),
    (b"\x01\x01x\x01\x03" + struct.pack("<III", 0, 2**32 - 1, 2**32 - 1), "cannot be built"),
])
def test_tensor_encoding_refuses_malformed_bytes(data: bytes, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        decode_tensors(data)


def test_hostile_arguments_trap_naming_the_cap(coord: Coordinator) -> None:
    relay = deploy_wat(coord, RELAY, "storage", "models")
    result = coord.execute(ExecutionRequest(resource_id=relay, caller="alice",
                                            input=relay_input(relay, cap=2**31 - 1)))
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind.value == "trap" and "hybrid.max_io_bytes" in result.error.message
    assert coord.state(relay) == {}


SPIN = '(module (func (export "main") (loop $l (br $l))))'


def test_a_deadline_stops_the_nested_call_and_its_parent(coord: Coordinator) -> None:
    relay = deploy_wat(coord, RELAY, "storage", "models")
    spin = deploy_wat(coord, SPIN)
    result = coord.execute(ExecutionRequest(resource_id=relay, caller="alice", timeout=0.3,
                                            fee_limit=10**11, input=relay_input(spin)))
    assert result.status is Status.TIMED_OUT
    (child,) = children(coord, result.execution_id)
    assert (child.status, child.resource_id) == ("timed_out", spin)
    assert child.duration < 2.0  # bounded by the parent's deadline, not its own default
    assert coord.state(relay) == {}


def test_clients_cannot_pose_as_nested_executions(coord: Coordinator) -> None:
    relay = deploy_wat(coord, RELAY, "storage", "models")
    forged = ({"parent_id": "ex-not-running"}, {"depth": -3}, {"parent_resource_id": relay})
    for fields in forged:
        result = coord.execute(ExecutionRequest(resource_id=relay, caller="alice",
                                                input=relay_input(relay), **fields))
        assert result.status is Status.REJECTED and result.error is not None
        assert result.error.kind.value == "invalid_request"
        assert "nested executions only" in result.error.message
