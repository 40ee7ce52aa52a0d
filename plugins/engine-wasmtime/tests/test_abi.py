"""The host ABI: I/O, storage with its overlay, events, logs, checked pointers, entries."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from coordinator_engine_wasmtime.abi import builtin_host_functions
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_hookspecs import (
    Effect,
    EffectKind,
    ExecutionResult,
    FeeExhausted,
    HostFunctionRecord,
    InvalidRequest,
    Status,
    Trap,
)

ECHO = """(module {io}
  (memory (export "memory") 1)
  (func (export "main")
    (call $input_read (i32.const 0))
    (call $output_write (i32.const 0) (call $input_len))))"""

COUNTER = """(module {io} {storage}
  (memory (export "memory") 1)
  (data (i32.const 0) "count")
  ;; value at 16 (8 bytes, little-endian i64); missing key counts as 0
  (func (export "main")
    (if (i32.lt_s (call $storage_get (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8))
                  (i32.const 0))
      (then (i64.store (i32.const 16) (i64.const 0))))
    (i64.store (i32.const 16) (i64.add (i64.load (i32.const 16)) (i64.const 1)))
    (call $storage_set (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8))
    (call $output_write (i32.const 16) (i32.const 8))))"""


def _wat(template: str, harness: Any) -> str:
    return template.format(io=harness.IO, storage=harness.STORAGE)


def test_input_is_echoed_to_output(harness: Any) -> None:
    echo = harness.deploy(_wat(ECHO, harness))
    result = harness.run(echo, input=b"hello wasm")
    assert result.output == b"hello wasm"
    assert result.effects == ()
    assert result.fee_used > 0
    assert harness.run(echo, input="text is utf-8").output == b"text is utf-8"


def test_counter_reads_committed_state_and_returns_a_write(harness: Any) -> None:
    counter = harness.deploy(_wat(COUNTER, harness), "storage")
    first = harness.run(counter)
    assert struct.unpack("<q", first.output) == (1,)
    rid = counter.resource.id
    assert first.effects == (Effect(EffectKind.STATE_SET, rid, b"count", first.output),)
    harness.state[b"count"] = struct.pack("<q", 41)
    assert struct.unpack("<q", harness.run(counter).output) == (42,)


def test_reads_see_the_executions_own_pending_writes(harness: Any) -> None:
    overlay = harness.deploy(_wat("""(module {io} {storage}
      (memory (export "memory") 1)
      (data (i32.const 0) "k")
      (data (i32.const 8) "new")
      (func (export "main")
        (i32.store (i32.const 100)
          (call $storage_get (i32.const 0) (i32.const 1) (i32.const 200) (i32.const 16)))
        (call $storage_set (i32.const 0) (i32.const 1) (i32.const 8) (i32.const 3))
        (i32.store (i32.const 104)
          (call $storage_get (i32.const 0) (i32.const 1) (i32.const 210) (i32.const 16)))
        (call $storage_remove (i32.const 0) (i32.const 1))
        (i32.store (i32.const 108)
          (call $storage_get (i32.const 0) (i32.const 1) (i32.const 220) (i32.const 16)))
        (call $output_write (i32.const 100) (i32.const 12))
        (call $output_write (i32.const 200) (i32.const 13))))""", harness), "storage")
    harness.state[b"k"] = b"old"
    result = harness.run(overlay)
    assert struct.unpack("<iii", result.output[:12]) == (3, 3, -1)
    assert result.output[12:] == b"old" + b"\0" * 7 + b"new"
    rid = overlay.resource.id
    assert result.effects == (Effect(EffectKind.STATE_SET, rid, b"k", b"new"),
                              Effect(EffectKind.STATE_DELETE, rid, b"k", b""))


def test_storage_get_writes_nothing_when_the_value_exceeds_the_buffer(harness: Any) -> None:
    small = harness.deploy(_wat("""(module {io} {storage}
      (memory (export "memory") 1)
      (data (i32.const 0) "k")
      (data (i32.const 16) "untouched")
      (func (export "main")
        (i32.store (i32.const 32)
          (call $storage_get (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 4)))
        (call $output_write (i32.const 16) (i32.const 20))))""", harness), "storage")
    harness.state[b"k"] = b"0123456789"
    out = harness.run(small).output
    assert out[:9] == b"untouched" and struct.unpack("<i", out[16:20]) == (10,)


def test_events_and_logs_become_effects(harness: Any) -> None:
    noisy = harness.deploy("""(module
      (import "env" "emit_event" (func $emit_event (param i32 i32)))
      (import "env" "log" (func $log (param i32 i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "transfer")
      (data (i32.const 16) "hello log")
      (func (export "main")
        (call $emit_event (i32.const 0) (i32.const 8))
        (call $log (i32.const 3) (i32.const 16) (i32.const 9))))""", "events", "log")
    rid = noisy.resource.id
    assert harness.run(noisy).effects == (Effect(EffectKind.EVENT, rid, b"", b"transfer"),
                                          Effect(EffectKind.LOG, rid, b"warn", b"hello log"))


def test_a_log_level_out_of_range_traps(harness: Any) -> None:
    bad = harness.deploy("""(module
      (import "env" "log" (func $log (param i32 i32 i32)))
      (memory (export "memory") 1)
      (func (export "main") (call $log (i32.const 9) (i32.const 0) (i32.const 1))))""", "log")
    error = harness.fail(bad)
    assert isinstance(error, Trap) and "log level 9" in error.message


def test_caller_and_fee_remaining(harness: Any) -> None:
    who = harness.deploy("""(module
      (import "env" "caller_len" (func $caller_len (result i32)))
      (import "env" "caller_read" (func $caller_read (param i32)))
      (import "env" "fee_remaining" (func $fee_remaining (result i64)))
      (import "env" "output_write" (func $output_write (param i32 i32)))
      (memory (export "memory") 1)
      (func (export "main")
        (i64.store (i32.const 0) (call $fee_remaining))
        (call $caller_read (i32.const 8))
        (call $output_write (i32.const 0) (i32.add (i32.const 8) (call $caller_len)))))""")
    result = harness.run(who, caller="carol", fee_limit=100_000)
    (left,) = struct.unpack("<q", result.output[:8])
    assert result.output[8:] == b"carol"
    assert 0 < left < 100_000
    assert result.fee_used > 100_000 - left  # the rest of the run was charged too


@pytest.mark.parametrize(("ptr", "length", "needle"), [
    (65530, 100, "outside the guest memory of 65536 bytes"),
    (-4, 4, "negative pointer or length"),
    (0, -1, "negative pointer or length"),
    (0x7FFFFFF0, 0x20, "outside the guest memory"),
])
def test_a_bad_pointer_traps_with_a_clear_message(harness: Any, ptr: int, length: int,
                                                  needle: str) -> None:
    reader = harness.deploy("""(module
      (import "env" "output_write" (func $output_write (param i32 i32)))
      (memory (export "memory") 1)
      (func (export "main") (param i32 i32) (call $output_write (local.get 0) (local.get 1))))""")
    error = harness.fail(reader, entry="main", args=[ptr, length])
    assert isinstance(error, Trap)
    assert needle in error.message and "output_write" in error.message


def test_per_call_size_caps_trap(harness_factory: Any) -> None:
    harness = harness_factory(max_key_bytes=4)
    setter = harness.deploy(_wat("""(module {io} {storage}
      (memory (export "memory") 1)
      (func (export "main")
        (call $storage_set (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 1))))""",
                                 harness), "storage")
    error = harness.fail(setter)
    assert isinstance(error, Trap) and "wasmtime.max_key_bytes" in error.message


def test_output_is_capped(harness_factory: Any) -> None:
    harness = harness_factory(max_output_bytes=10)
    echo = harness.deploy(_wat(ECHO, harness))
    assert harness.run(echo, input=b"0123456789").output == b"0123456789"
    error = harness.fail(echo, input=b"0123456789x")
    assert isinstance(error, Trap) and "max_output_bytes" in error.message


def test_host_fees_count_and_can_exhaust_the_limit(harness_factory: Any) -> None:
    harness = harness_factory(fee_per_host_call=1000, fee_per_byte=0)
    echo = harness.deploy(_wat(ECHO, harness))
    assert harness.run(echo, input=b"x").fee_used >= 3000
    error = harness.fail(echo, input=b"x", fee_limit=2500)
    assert isinstance(error, FeeExhausted) and error.fee_used == 2500


def test_numeric_entries_take_args_and_return_results(harness: Any) -> None:
    math = harness.deploy("""(module
      (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
      (func (export "wide") (param i64 f64) (result i64 f64)
        (i64.mul (local.get 0) (i64.const 2)) (f64.mul (local.get 1) (f64.const 0.5)))
      (func (export "main")))""")
    assert harness.run(math, entry="add", args=[2, 3]).output == [5]
    assert harness.run(math, entry="add", args=(-7, 0xFFFFFFFF)).output == [-8]
    assert harness.run(math, entry="wide", args=[2**40, 3]).output == [2**41, 1.5]
    assert harness.run(math).output == b""  # entry None means "main"
    assert harness.run(math, args=[]).output == []


@pytest.mark.parametrize(("entry", "args", "needle"), [
    ("nope", None, "entry 'nope' is not an exported function; exported functions: add, main"),
    ("add", None, "takes 2 args (i32, i32); pass them as args"),
    ("add", [1], "takes 2 args (i32, i32), got 1"),
    ("add", [1, "2"], "arg 1 of entry 'add' must be a number (i32), got str"),
    ("add", [1, 2.5], "must be an integer that fits i32"),
    ("add", [1, 2**32], "must be an integer that fits i32"),
    ("add", [True, 1], "must be a number"),
    ("add", "12", "must be a list"),
])
def test_bad_entries_and_args_are_invalid_requests(harness: Any, entry: str, args: Any,
                                                    needle: str) -> None:
    math = harness.deploy("""(module
      (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
      (func (export "main")))""")
    error = harness.fail(math, entry=entry, args=args)
    assert isinstance(error, InvalidRequest) and needle in error.message


def test_non_bytes_input_is_an_invalid_request(harness: Any) -> None:
    echo = harness.deploy(_wat(ECHO, harness))
    error = harness.fail(echo, input={"x": [1.0]})
    assert isinstance(error, InvalidRequest) and "must be bytes" in error.message


def test_a_start_function_is_metered_too(harness: Any) -> None:
    spinner = harness.deploy("""(module
      (func $spin (loop $l (br $l)))
      (start $spin)
      (func (export "main")))""")
    error = harness.fail(spinner, fee_limit=50_000)
    assert isinstance(error, FeeExhausted) and error.fee_used == 50_000


def test_a_host_function_may_run_a_nested_execution_on_the_same_thread(harness: Any) -> None:
    def relay(call: Any, ptr: int, length: int) -> int:
        data = call.read(ptr, length)
        nested = call.context.invoke(data)  # runs `inner` through this same engine
        call.charge(nested.fee_used)
        call.write(ptr, nested.output[::-1])
        return len(nested.output)

    records = builtin_host_functions(WasmtimeSettings())
    records.append(HostFunctionRecord(name="relay", capability="nest", func=relay,
                                      params=("i32", "i32"), results=("i32",)))
    harness.engine.bind_host_functions(records)
    inner = harness.deploy(_wat(ECHO, harness))
    outer = harness.deploy(_wat("""(module {io}
      (import "env" "relay" (func $relay (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "main") (local $n i32)
        (call $input_read (i32.const 0))
        (local.set $n (call $relay (i32.const 0) (call $input_len)))
        (call $output_write (i32.const 0) (local.get $n))))""", harness), "nest")

    def invoke(data: bytes) -> Any:
        result = harness.run(inner, input=data)
        return ExecutionResult(execution_id="t2", status=Status.SUCCEEDED,
                               resource_id=inner.resource.id, caller="alice",
                               output=result.output, fee_used=result.fee_used)

    context = harness.context(outer, input=b"stressed")
    context.invoke = invoke
    result = harness.engine.execute(context)
    assert result.output == b"desserts"
    assert result.fee_used > harness.run(inner, input=b"stressed").fee_used


def test_memory_grown_during_the_call_is_read_and_written_past_its_old_end(
        harness: Any) -> None:
    """Host calls see guest memory through a view sized when first used; a guest that grows
    its memory afterwards is read and written past the old end (the view is renewed)."""
    grower = harness.deploy(_wat("""(module {io}
      (memory (export "memory") 1)
      (func (export "main")
        (call $output_write (i32.const 0) (i32.const 1))  ;; first use: a one-page view
        (drop (memory.grow (i32.const 1)))
        (call $input_read (i32.const 70000))
        (call $output_write (i32.const 70000) (call $input_len))))""", harness))
    assert harness.run(grower, input=b"beyond").output == b"\0beyond"


def test_a_host_function_keeping_its_call_cannot_reach_memory_after_the_execution(
        harness: Any) -> None:
    kept: list[Any] = []

    def keep(call: Any) -> None:
        assert call.read(0, 4) == b"data"  # reachable while the execution runs
        kept.append(call)

    records = builtin_host_functions(WasmtimeSettings())
    records.append(HostFunctionRecord(name="keep", capability="keep", func=keep))
    harness.engine.bind_host_functions(records)
    keeper = harness.deploy("""(module
      (import "env" "keep" (func $keep))
      (memory (export "memory") 1)
      (data (i32.const 0) "data")
      (func (export "main") (call $keep)))""", "keep")
    harness.run(keeper)
    (call,) = kept
    assert call.view is None
    with pytest.raises(Trap, match="execution is over"):
        call.read(0, 4)
    with pytest.raises(Trap, match="execution is over"):
        call.write(0, b"x")
