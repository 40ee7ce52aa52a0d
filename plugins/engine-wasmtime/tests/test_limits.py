"""Issue 3's acceptance at engine level: fee, deadline, cancel, memory, stack, compile bomb."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from coordinator_hookspecs import (
    Cancelled,
    CancelToken,
    EngineError,
    ErrorKind,
    FeeExhausted,
    SecurityRejected,
    Timeout,
    Trap,
)

LOOPER = """(module
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "key")
  (func (export "main")
    (call $storage_set (i32.const 0) (i32.const 3) (i32.const 0) (i32.const 3))
    (loop $spin (br $spin))))"""

RECURSE = """(module
  (func $down (export "down") (param i32) (result i32)
    (call $down (i32.add (local.get 0) (i32.const 1)))))"""

GROW = """(module
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"""


def test_infinite_loop_runs_out_of_fee_and_writes_nothing(harness: Any) -> None:
    looper = harness.deploy(LOOPER, "storage")
    error = harness.fail(looper, fee_limit=1_000_000)
    assert isinstance(error, FeeExhausted)
    assert error.fee_used == 1_000_000
    assert harness.state == {}  # the buffered storage_set went with the failure


def test_infinite_loop_times_out_within_half_a_second(harness: Any) -> None:
    looper = harness.deploy(LOOPER, "storage")
    started = time.monotonic()
    error = harness.fail(looper, fee_limit=10**15, timeout=0.2)
    elapsed = time.monotonic() - started
    assert isinstance(error, Timeout)
    assert error.kind is ErrorKind.TIMEOUT
    assert 0.2 <= elapsed < 0.5
    assert error.fee_used == 10**15  # an interrupted execution is charged its whole limit


def test_cancel_from_another_thread_stops_a_running_loop_within_100_ms(
        harness: Any) -> None:
    looper = harness.deploy(LOOPER, "storage")
    token = CancelToken(time.monotonic() + 30)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            harness.run(looper, fee_limit=10**15, token=token)
        except Exception as exc:
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.15)  # well inside the loop
    assert worker.is_alive()
    cancelled_at = time.monotonic()
    token.cancel(ErrorKind.CANCELLED)
    worker.join(5)
    assert isinstance(outcome["error"], Cancelled)
    assert outcome["ended"] - cancelled_at < 0.1  # type: ignore[operator]


def test_a_token_cancelled_before_the_start_never_runs(harness: Any) -> None:
    looper = harness.deploy(LOOPER, "storage")
    token = CancelToken()
    token.cancel(ErrorKind.CANCELLED)
    error = harness.fail(looper, token=token)
    assert isinstance(error, Cancelled) and error.fee_used == 0


def test_memory_grow_past_the_limit_is_refused_and_the_process_lives(harness: Any) -> None:
    grow = harness.deploy(GROW)
    assert harness.run(grow, entry="grow", args=[65535]).output == [-1]  # 4 GiB
    assert harness.run(grow, entry="grow", args=[512]).output == [-1]  # past 32 MiB
    assert harness.run(grow, entry="grow", args=[16]).output == [1]  # within: old size


def test_initial_memory_over_the_static_limit_is_refused_at_deploy(harness: Any) -> None:
    with pytest.raises(SecurityRejected, match="initial memory"):
        harness.deploy('(module (memory (export "memory") 1000))')


def test_deep_recursion_traps_with_stack_overflow(harness: Any) -> None:
    recurse = harness.deploy(RECURSE)
    error = harness.fail(recurse, entry="down", args=[0])
    assert isinstance(error, Trap) and "stack overflow" in error.message
    assert harness.run(harness.deploy(GROW), entry="grow", args=[0]).output == [1]


def test_deep_recursion_in_worker_threads_traps_too(harness: Any) -> None:
    recurse = harness.deploy(RECURSE)

    def attempt() -> str:
        return harness.fail(recurse, entry="down", args=[0]).message

    with ThreadPoolExecutor(max_workers=2) as pool:
        messages = list(pool.map(lambda _: attempt(), range(4)))
    holder: list[str] = []
    thread = threading.Thread(target=lambda: holder.append(attempt()))
    thread.start()
    thread.join()
    assert all("stack overflow" in m for m in [*messages, *holder])


def test_unreachable_after_storage_set_leaves_no_effects(harness: Any) -> None:
    contract = harness.deploy("""(module
      (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
      (memory (export "memory") 1)
      (func (export "main")
        (call $storage_set (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1))
        unreachable))""", "storage")
    error = harness.fail(contract)
    assert isinstance(error, Trap) and "unreachable" in error.message
    assert error.fee_used > 0
    assert harness.state == {}


def _many_functions(count: int) -> str:
    body = "(func (result i32) (i32.add (i32.const 1) (i32.const 2)))" * count
    return f'(module {body} (func (export "main")))'


def test_a_20000_function_compile_bomb_is_refused_cheaply(harness: Any) -> None:
    bomb = _many_functions(20_000)
    started = time.monotonic()
    with pytest.raises(SecurityRejected, match="number of defined functions is 20001"):
        harness.deploy(bomb)
    assert time.monotonic() - started < 2.0  # refused by the static limit, never compiled
    assert harness.engine.cache_stats()["compiles"] == 0
    # and the engine is as responsive as before
    assert harness.run(harness.deploy(GROW), entry="grow", args=[0]).output == [1]


def test_the_compile_time_cap_refuses_a_module_the_static_limits_let_through(
        harness_factory: Any) -> None:
    # 2,000 functions compile in tens of milliseconds: far past a 1 ms cap, and the
    # abandoned compile finishes soon in the background.
    harness = harness_factory(compile_timeout=0.001)
    with pytest.raises(SecurityRejected, match="compiling took longer than 0.001 s"):
        harness.deploy(_many_functions(2_000))


def test_running_out_of_instance_slots_is_an_engine_error(harness_factory: Any) -> None:
    harness = harness_factory(instance_pool_slots=1)
    looper = harness.deploy(LOOPER, "storage")
    grow = harness.deploy(GROW)
    token = CancelToken(time.monotonic() + 30)
    errors: list[Exception] = []

    def hold_the_slot() -> None:
        try:
            harness.run(looper, fee_limit=10**15, token=token)
        except Exception as exc:
            errors.append(exc)

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    time.sleep(0.1)
    try:
        error = harness.fail(grow, entry="grow", args=[0])
    finally:
        token.cancel(ErrorKind.CANCELLED)
        holder.join(5)
    assert isinstance(error, EngineError)
    assert "wasmtime.instance_pool_slots" in error.message
    assert isinstance(errors[0], Cancelled)
    assert harness.run(grow, entry="grow", args=[0]).output == [1]  # the slot is free again


def test_a_looping_start_function_times_out_too(harness: Any) -> None:
    spinner = harness.deploy("""(module
      (func $spin (loop $l (br $l)))
      (start $spin)
      (func (export "main")))""")
    started = time.monotonic()
    error = harness.fail(spinner, fee_limit=10**15, timeout=0.2)
    assert isinstance(error, Timeout) and time.monotonic() - started < 0.5
