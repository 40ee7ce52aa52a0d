"""The built-in host functions of the contract ABI (module ``env``; see docs/abi-wasm.md).

Capabilities: ``io`` (always granted) for input, output, caller and fee; ``storage`` for the
resource's key-value state; ``events`` for events; ``log`` for log lines. Each call costs
``fee_per_host_call`` (charged by the engine from the record's ``fee``) plus ``fee_per_byte``
for every byte it moves, plus ``fee_storage_write`` for a write. Sizes are capped per call;
a breach traps with a message naming the cap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_hookspecs import Effect, EffectKind, HostFunctionRecord, Trap

if TYPE_CHECKING:  # the records are built at registration, before wasmtime is imported
    from coordinator_engine_wasmtime.invocation import Invocation

#: Log levels a guest may use; the effect's key is the level's name in ASCII.
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")


def builtin_host_functions(s: WasmtimeSettings) -> list[HostFunctionRecord]:
    """The ABI's host functions, with caps and fees from ``s``."""
    per_byte, write_fee = s.fee_per_byte, s.fee_storage_write
    max_key, max_value = s.max_key_bytes, s.max_value_bytes

    def cap(length: int, limit: int, what: str, key: str) -> None:
        if length > limit:
            raise Trap(f"{what} of {length} bytes exceeds the cap of {limit} (wasmtime.{key})")

    # The storage functions run on most executions: their caps are checked inline and their
    # fees added to ``pending`` directly (``charge`` validates a plugin's fee; ours are ints).

    def input_len(call: Invocation) -> int:
        return len(call.input)

    def input_read(call: Invocation, ptr: int) -> None:
        call.charge(per_byte * len(call.input))
        call.write(ptr, call.input, "input_read")

    def output_write(call: Invocation, ptr: int, length: int) -> None:
        cap(len(call.output) + max(length, 0), s.max_output_bytes, "output",
            "max_output_bytes")
        call.charge(per_byte * max(length, 0))
        call.output += call.read(ptr, length, "output_write")

    def caller_len(call: Invocation) -> int:
        return len(call.context.request.caller.encode())

    def caller_read(call: Invocation, ptr: int) -> None:
        caller = call.context.request.caller.encode()
        call.charge(per_byte * len(caller))
        call.write(ptr, caller, "caller_read")

    def fee_remaining(call: Invocation) -> int:
        return call.fee_remaining()

    def storage_get(call: Invocation, kptr: int, klen: int, vptr: int, vcap: int) -> int:
        if klen > max_key:
            cap(klen, max_key, "storage key", "max_key_bytes")
        key = call.read(kptr, klen, "storage_get key")
        value = call.storage_get(key)
        if value is None:
            call.pending += per_byte * klen
            return -1
        call.pending += per_byte * (klen + len(value))
        if len(value) <= vcap:  # a value too big for the buffer: length only, nothing written
            call.write(vptr, value, "storage_get value")
        return len(value)

    def storage_set(call: Invocation, kptr: int, klen: int, vptr: int, vlen: int) -> None:
        if klen > max_key or vlen > max_value:
            cap(klen, max_key, "storage key", "max_key_bytes")
            cap(vlen, max_value, "storage value", "max_value_bytes")
        key = call.read(kptr, klen, "storage_set key")
        value = call.read(vptr, vlen, "storage_set value")
        call.pending += write_fee + per_byte * (klen + vlen)
        call.storage_put(key, value)

    def storage_remove(call: Invocation, kptr: int, klen: int) -> None:
        cap(klen, s.max_key_bytes, "storage key", "max_key_bytes")
        key = call.read(kptr, klen, "storage_remove key")
        call.charge(write_fee + per_byte * klen)
        call.storage_put(key, None)

    def emit_event(call: Invocation, ptr: int, length: int) -> None:
        cap(length, s.max_event_bytes, "event", "max_event_bytes")
        payload = call.read(ptr, length, "emit_event")
        call.charge(per_byte * length)
        call.emit(Effect(EffectKind.EVENT, call.resource_id, b"", payload))

    def log(call: Invocation, level: int, ptr: int, length: int) -> None:
        if not 0 <= level < len(LOG_LEVELS):
            raise Trap(f"log level {level} is not one of 0..{len(LOG_LEVELS) - 1} "
                       f"({', '.join(LOG_LEVELS)})")
        cap(length, s.max_log_bytes, "log line", "max_log_bytes")
        text = call.read(ptr, length, "log")
        call.charge(per_byte * length)
        call.emit(Effect(EffectKind.LOG, call.resource_id, LOG_LEVELS[level].encode(), text))

    fee = s.fee_per_host_call

    def rec(name: str, capability: str, func: Callable[..., Any], params: tuple[str, ...],
            results: tuple[str, ...] = ()) -> HostFunctionRecord:
        return HostFunctionRecord(name=name, capability=capability, func=func, params=params,
                                  results=results, fee=fee)

    i32 = "i32"
    return [
        rec("input_len", "io", input_len, (), (i32,)),
        rec("input_read", "io", input_read, (i32,)),
        rec("output_write", "io", output_write, (i32, i32)),
        rec("caller_len", "io", caller_len, (), (i32,)),
        rec("caller_read", "io", caller_read, (i32,)),
        rec("fee_remaining", "io", fee_remaining, (), ("i64",)),
        rec("storage_get", "storage", storage_get, (i32, i32, i32, i32), (i32,)),
        rec("storage_set", "storage", storage_set, (i32, i32, i32, i32)),
        rec("storage_remove", "storage", storage_remove, (i32, i32)),
        rec("emit_event", "events", emit_event, (i32, i32)),
        rec("log", "log", log, (i32, i32, i32)),
    ]
