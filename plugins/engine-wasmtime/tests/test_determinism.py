"""Determinism: the same contract, input and state give byte-identical results every time."""

from __future__ import annotations

from typing import Any

TOKEN = """(module
  (import "env" "input_len" (func $input_len (result i32)))
  (import "env" "input_read" (func $input_read (param i32)))
  (import "env" "storage_get" (func $storage_get (param i32 i32 i32 i32) (result i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "emit_event" (func $emit_event (param i32 i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (memory (export "memory") 1)
  ;; input: key bytes; value = previous value (or empty) + key, emitted and returned
  (func (export "main") (local $n i32) (local $v i32)
    (call $input_read (i32.const 0))
    (local.set $n (call $input_len))
    (local.set $v (call $storage_get (i32.const 0) (local.get $n) (i32.const 1024)
                                     (i32.const 1024)))
    (if (i32.lt_s (local.get $v) (i32.const 0)) (then (local.set $v (i32.const 0))))
    (memory.copy (i32.add (i32.const 1024) (local.get $v)) (i32.const 0) (local.get $n))
    (local.set $v (i32.add (local.get $v) (local.get $n)))
    (call $storage_set (i32.const 0) (local.get $n) (i32.const 1024) (local.get $v))
    (call $emit_event (i32.const 1024) (local.get $v))
    (call $output_write (i32.const 1024) (local.get $v))))"""


def test_same_contract_input_and_state_give_identical_results(harness_factory: Any) -> None:
    outcomes = []
    for _ in range(2):  # two engines, so nothing is shared but the inputs
        harness = harness_factory(disk_cache=False)
        harness.state[b"ab"] = b"xyz"
        token = harness.deploy(TOKEN, "storage", "events")
        runs = [harness.run(token, input=b"ab") for _ in range(3)]
        outcomes.extend((r.output, r.effects, r.fee_used) for r in runs)
    assert outcomes[0][0] == b"xyzab"
    assert all(o == outcomes[0] for o in outcomes)


def test_nans_are_canonical(harness: Any) -> None:
    nan = harness.deploy("""(module
      (func (export "f32") (param f32) (result i32)
        (i32.reinterpret_f32 (f32.div (local.get 0) (local.get 0))))
      (func (export "f64") (param f64) (result i64)
        (i64.reinterpret_f64 (f64.sqrt (local.get 0)))))""")
    # x86 would give the negative default NaN 0xffc00000 without canonicalisation
    assert harness.run(nan, entry="f32", args=[0.0]).output == [0x7FC00000]
    assert harness.run(nan, entry="f64", args=[-1.0]).output == [0x7FF8000000000000]
