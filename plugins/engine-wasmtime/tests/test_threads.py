"""Thread safety: host-function errors stay with the execution that raised them.

wasmtime-py keeps the last host-function exception in a module global, so with two threads
an error raised in one host function surfaces in the other caller (issue 3 saw it 2,780 times
in 8 s). This engine records errors on each execution's own state; here two threads run
thousands of executions whose host calls fail with messages unique to each call.
"""

from __future__ import annotations

import threading
from typing import Any

from coordinator_engine_wasmtime.abi import builtin_host_functions
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_hookspecs import HostFunctionRecord, Trap

FAILER = """(module
  (import "env" "fail_with" (func $fail_with (param i64)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "fail") (param i64) (call $fail_with (local.get 0)))
  (func (export "bad_pointer") (param i32) (call $output_write (local.get 0) (i32.const 8)))
  (func (export "fine") (param i64) (result i64) (local.get 0)))"""

PER_THREAD = 1500


def test_each_caller_gets_its_own_host_error(harness: Any) -> None:
    def fail_with(call: Any, tag: int) -> None:
        raise Trap(f"tag {tag} from {call.context.request.caller}")

    records = builtin_host_functions(WasmtimeSettings())
    records.append(HostFunctionRecord(name="fail_with", capability="io", func=fail_with,
                                      params=("i64",)))
    harness.engine.bind_host_functions(records)
    failer = harness.deploy(FAILER)
    mistakes: list[str] = []
    start = threading.Barrier(2)

    def worker(name: str, offset: int) -> None:
        start.wait()
        for n in range(PER_THREAD):
            tag = offset + n
            if n % 3 == 0:  # a successful call in between must stay clean too
                result = harness.run(failer, entry="fine", args=[tag], caller=name)
                if result.output != [tag]:
                    mistakes.append(f"{name}: fine({tag}) -> {result.output}")
                continue
            if n % 3 == 1:
                error = harness.fail(failer, entry="fail", args=[tag], caller=name)
                expected = f"tag {tag} from {name}"
            else:
                error = harness.fail(failer, entry="bad_pointer", args=[70_000 + tag],
                                     caller=name)
                expected = f"range [{70_000 + tag}, {70_008 + tag})"
            if not isinstance(error, Trap) or expected not in error.message:
                mistakes.append(f"{name}: expected {expected!r}, got {error!r}")

    threads = [threading.Thread(target=worker, args=("alice", 0)),
               threading.Thread(target=worker, args=("bob", 1_000_000))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mistakes == []
