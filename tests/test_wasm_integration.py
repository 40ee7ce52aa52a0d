"""The WASM engine through the whole coordinator: deploy refusals, execution outcomes,
committed effects, cancel through submit, and the module cache across a restart."""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_hookspecs import ExecutionResult, InvalidRequest, SecurityRejected, Status

COUNTER = """(module
  (import "env" "storage_get" (func $storage_get (param i32 i32 i32 i32) (result i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "emit_event" (func $emit_event (param i32 i32)))
  (import "env" "log" (func $log (param i32 i32 i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "count")
  (data (i32.const 32) "counted")
  (func (export "main")
    (if (i32.lt_s (call $storage_get (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8))
                  (i32.const 0))
      (then (i64.store (i32.const 16) (i64.const 0))))
    (i64.store (i32.const 16) (i64.add (i64.load (i32.const 16)) (i64.const 1)))
    (call $storage_set (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8))
    (call $emit_event (i32.const 32) (i32.const 7))
    (call $log (i32.const 2) (i32.const 32) (i32.const 7))
    (call $output_write (i32.const 16) (i32.const 8)))
  (func (export "spin")
    (call $storage_set (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 5))
    (loop $l (br $l)))
  (func (export "crash")
    (call $storage_set (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 5))
    unreachable)
  (func (export "overread") (call $output_write (i32.const 65000) (i32.const 1000)))
  (func $down (export "down") (param i32) (result i32)
    (call $down (i32.add (local.get 0) (i32.const 1))))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))"""

CAPS = ["storage", "events", "log"]


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    with Coordinator.open(data_dir=tmp_path / "data") as coordinator:
        yield coordinator


@pytest.fixture
def counter(coord: Coordinator) -> str:
    return coord.deploy(COUNTER, "wasm", name="counter", capabilities=CAPS, source_format="wat")


def _error(result: ExecutionResult) -> tuple[str, str]:
    """(kind, message) of a failed result."""
    assert result.error is not None, result
    return result.error.kind.value, result.error.message


def _run(coord: Coordinator, rid: str, **kw: Any) -> ExecutionResult:
    return coord.execute(ExecutionRequest(resource_id=rid, caller="alice", **kw))


def test_executions_commit_state_events_and_logs(coord: Coordinator, counter: str) -> None:
    first, second = _run(coord, counter), _run(coord, counter)
    assert first.ok and second.ok
    assert struct.unpack("<q", second.output) == (2,)
    assert second.fee_used > 0 and second.engine == "wasmtime"
    assert coord.state(counter) == {b"count": struct.pack("<q", 2)}
    assert [(e["kind"], e["level"], e["payload"]) for e in coord.events(counter)][:2] == [
        ("event", None, b"counted"), ("log", "info", b"counted")]
    assert len(coord.events(counter)) == 4
    info = coord.resource(counter)
    assert info.meta["required_capabilities"] == ["events", "io", "log", "storage"]


def test_numeric_entries_and_bad_entries(coord: Coordinator, counter: str) -> None:
    assert _run(coord, counter, entry="add", args=(2, 3)).output == [5]
    missing = _run(coord, counter, entry="nope")
    assert missing.status is Status.REJECTED
    assert _error(missing)[0] == "invalid_request"
    assert "exported functions: add, crash" in _error(missing)[1]


@pytest.mark.parametrize(("entry", "status", "kind", "needle"), [
    ("spin", Status.FAILED, "fee_exhausted", "fee limit 1000000"),
    ("crash", Status.FAILED, "trap", "unreachable"),
    ("overread", Status.FAILED, "trap", "outside the guest memory"),
])
def test_failures_leave_no_state(coord: Coordinator, counter: str, entry: str, status: Status,
                                 kind: str, needle: str) -> None:
    result = _run(coord, counter, entry=entry, fee_limit=1_000_000)
    assert result.status is status
    assert _error(result)[0] == kind and needle in _error(result)[1]
    assert result.fee_used > 0
    assert coord.state(counter) == {}


def test_an_infinite_loop_times_out_within_half_a_second(coord: Coordinator,
                                                         counter: str) -> None:
    started = time.monotonic()
    result = _run(coord, counter, entry="spin", fee_limit=10**12, timeout=0.2)
    assert time.monotonic() - started < 0.5
    assert result.status is Status.TIMED_OUT
    assert _error(result)[0] == "timeout"
    assert coord.state(counter) == {}


def test_cancel_stops_a_running_loop_within_100_ms(coord: Coordinator, counter: str) -> None:
    handle = coord.submit(ExecutionRequest(resource_id=counter, entry="spin", fee_limit=10**12,
                                           timeout=20))
    deadline = time.monotonic() + 5
    while coord.status(handle.execution_id).status is not Status.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.05)
    cancelled_at = time.monotonic()
    assert coord.cancel(handle.execution_id)
    result = handle.result(timeout=5)
    assert time.monotonic() - cancelled_at < 0.1
    assert result.status is Status.CANCELLED and _error(result)[0] == "cancelled"
    assert coord.state(counter) == {}


def test_limits_hold_and_the_process_lives(coord: Coordinator, counter: str) -> None:
    assert _run(coord, counter, entry="grow", args=(65535,)).output == [-1]
    deep = coord.submit(ExecutionRequest(resource_id=counter, entry="down", args=(0,)))
    for result in (deep.result(timeout=10), _run(coord, counter, entry="down", args=(0,))):
        assert _error(result)[0] == "trap"
        assert "stack overflow" in _error(result)[1]
    assert _run(coord, counter, entry="add", args=(1, 1)).output == [2]


def test_deploy_refusals(coord: Coordinator) -> None:
    with pytest.raises(SecurityRejected, match="needs capability 'storage'"):
        coord.deploy(COUNTER, "wasm", capabilities=["events", "log"], source_format="wat")
    with pytest.raises(InvalidRequest, match="code is a str"):
        coord.deploy(COUNTER, "wasm")
    binary = coord.engine_for("wasm").canonical_code(COUNTER, "wat")
    for bad, needle in ((b"", "empty"), (b"\x7fELF\x02\x01", "magic"),
                        (binary[: len(binary) // 2], "truncated")):
        with pytest.raises(InvalidRequest, match=needle):
            coord.deploy(bad, "wasm", capabilities=CAPS)


def test_a_compile_bomb_is_refused_and_the_coordinator_stays_responsive(
        coord: Coordinator, counter: str) -> None:
    bomb = "(module " + "(func (result i32) (i32.const 7))" * 20_000 + ")"
    started = time.monotonic()
    with pytest.raises(SecurityRejected, match="number of defined functions"):
        coord.deploy(bomb, "wasm", source_format="wat")
    assert time.monotonic() - started < 5
    assert _run(coord, counter).ok


def test_compiled_modules_survive_a_restart(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path) as first:
        rid = first.deploy(COUNTER, "wasm", capabilities=CAPS, source_format="wat")
        assert first.engine_for("wasm").cache_stats()["compiles"] == 1
    with Coordinator.open(data_dir=tmp_path) as second:
        assert _run(second, rid).ok
        stats = second.engine_for("wasm").cache_stats()
        assert (stats["compiles"], stats["disk_loads"]) == (0, 1)


DOC = Path(__file__).resolve().parent.parent / "docs" / "abi-wasm.md"


def test_the_abi_document_lists_every_built_in_host_function(coord: Coordinator) -> None:
    text = DOC.read_text()
    rows = re.findall(r"^\| `(\w+)` \| `[^`]*` \| `(\w+)` \|", text, re.MULTILINE)
    builtin = {name: record.capability for name, record in coord.engine_for("wasm").hosts.items()
               if name != "model_infer"}  # documented in docs/hybrid.md
    assert dict(rows) == builtin


def test_the_token_example_of_the_abi_document_runs_as_documented(coord: Coordinator) -> None:
    text = DOC.read_text()
    (wat,) = re.findall(r"```wat\n(.*?)```", text, re.DOTALL)
    (example,) = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    token = Path(coord.config.data_dir) / "token.wat"
    token.write_text(wat)
    # The example as written, with this test's coordinator and file instead of the defaults.
    code = example.replace("with Coordinator.open() as coord:", "if True:")
    code = code.replace('open("token.wat")', f"open({str(token)!r})")
    exec(compile(code, str(DOC), "exec"), {"coord": coord})


def test_pointer_host_call_from_a_start_function_traps(coord: Coordinator) -> None:
    """Found in review: wasmtime panicked (aborting the process) when a start function called
    a host function taking a pointer, before the instance existed."""
    rid = coord.deploy("""(module
      (import "env" "input_read" (func $read (param i32)))
      (memory (export "memory") 1)
      (func $start (call $read (i32.const 0)))
      (start $start)
      (func (export "main")))""", "wasm", source_format="wat")
    result = coord.execute(ExecutionRequest(resource_id=rid, input=b"hi"))
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind.value == "trap" and "start function" in result.error.message
    assert coord.execute(ExecutionRequest(resource_id=rid, input=b"hi")).error is not None


@pytest.mark.parametrize(("ending", "exact"), [
    ("unreachable", True),
    ("(drop (i32.div_s (i32.const 1) (i32.const 0)))", False),
    ("(drop (i32.load (i32.const -1)))", False),
])
def test_a_fault_cannot_hide_the_fuel_it_burnt(coord: Coordinator, ending: str,
                                               exact: bool) -> None:
    """Found in review: after a signal-raised trap wasmtime's fuel counter is stale (it read
    as ~0 after a long loop), so such a trap is charged the whole fee limit."""
    rid = coord.deploy(f"""(module
      (memory (export "memory") 1)
      (func (export "main") (local $i i32)
        (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))
        {ending}))""", "wasm", source_format="wat")
    limit = 10_000_000
    result = coord.execute(ExecutionRequest(resource_id=rid, fee_limit=limit))
    assert result.error is not None and result.error.kind.value == "trap"
    if exact:
        assert 100_000 < result.fee_used < limit
    else:
        assert result.fee_used == limit


def test_nested_guest_stacks_must_fit_the_thread_stack(tmp_path: Path) -> None:
    """Found in review: max_depth 3 with 2 MiB guest stacks segfaulted in nested calls;
    such a configuration is refused when the coordinator opens."""
    overrides = {"wasmtime": {"max_wasm_stack": 2 * 1024 * 1024},
                 "coordinator": {"max_depth": 3}}
    with pytest.raises(InvalidRequest, match="max_wasm_stack.*max_depth.*native stack"):
        Coordinator.open(data_dir=tmp_path / "data", overrides=overrides)
    with Coordinator.open(data_dir=tmp_path / "ok", overrides={"coordinator": {"max_depth": 3}}):
        pass  # the default 512 KiB guest stack leaves room for three nested calls
