"""One execution on a fresh store: the host trampoline, the epoch callback and the call.

Host functions are defined once per engine in a linker (``define_func_unchecked``) with one
shared C trampoline; ``env`` is the function's index in the engine's host table. The running
execution is found through a thread-local (host calls and epoch callbacks always run on the
thread that entered wasm; a nested execution saves and restores it), and every error is
recorded on that execution's own ``Invocation``, never in a global.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

from coordinator_engine_wasmtime import _capi
from coordinator_engine_wasmtime.invocation import SETTLE_AT, Invocation
from coordinator_hookspecs import (
    Cancelled,
    CoordinatorError,
    EngineError,
    ErrorKind,
    FeeExhausted,
    InternalError,
    Timeout,
    Trap,
)

#: (func, unpack params or None, params byte size, write results or None, fee, name)
HostEntry = tuple[Callable[..., Any], Any, int, Any, int, str]

_local = threading.local()
#: The thread-local whose ``current`` is the execution running wasm on the thread (the
#: engine sets and restores it around each call).
thread_state = _local
_string_at = ctypes.string_at
_u64 = ctypes.c_uint64.from_address
_u8 = ctypes.c_uint8.from_address


@_capi.HOST_CALLBACK
def _trampoline(env: int, _caller: int, raw: int, _nraw: int) -> int:
    inv = getattr(_local, "current", None)
    if inv is None:
        return _capi.new_trap("host function called outside of an execution")
    name = "?"
    try:
        func, unpack, size, write, fee, name = inv.hosts[env]
        inv.pending += fee
        result = func(inv) if unpack is None else func(inv, *unpack(_string_at(raw, size)))
        if write is not None:
            write(raw, result)
        if inv.pending >= SETTLE_AT:
            inv.settle()
        return 0
    except CoordinatorError as exc:
        inv.error = exc
    except Exception as exc:  # a host function bug: reported as internal, naming it
        inv.error = InternalError(f"host function {name} failed: {type(exc).__name__}: {exc}")
    except BaseException as exc:  # KeyboardInterrupt and friends must not unwind through C
        inv.error = Cancelled(f"host function {name} interrupted: {type(exc).__name__}")
    return _capi.new_trap(f"host function {name}: {inv.error.message}")


@_capi.EPOCH_CALLBACK
def _on_epoch(_cx: int, _env: int, delta: int, kind: int) -> int:
    inv = getattr(_local, "current", None)
    try:
        reason = inv.context.token.poll() if inv is not None else ErrorKind.CANCELLED
    except BaseException:  # a broken token must stop the guest, not unwind through C
        reason = ErrorKind.CANCELLED
    if reason is None:
        _u64(delta).value = 1  # look again at the next tick
        _u8(kind).value = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
        return 0
    if inv is not None:
        inv.stop = reason
    return int(_capi.error_new(f"execution interrupted: {reason.value}".encode()))


def run(engine: int, pre: int, has_start: bool, inv: Invocation, entry: bytes, args: bytes,
        nslots: int, fee_limit: int, limits: tuple[int, int, int, int, int]
        ) -> tuple[int, int, int]:
    """Instantiate ``pre`` on a fresh store and call ``entry``.

    Returns (error pointer, trap pointer, fuel left); both pointers 0 on success. The results
    are left in the scratch buffer's raw slots.
    """
    instantiate = _capi.pre_instantiate if has_start else _capi.pre_instantiate_quick
    base = inv.base
    store = _capi.store_new(engine, None, None)
    try:
        cx = inv.cx = _capi.store_context(store)
        _capi.store_limiter(store, *limits)
        _capi.set_fuel(cx, fee_limit)
        _capi.set_epoch_deadline(cx, 1)
        _capi.set_epoch_callback(store, _on_epoch, None, None)
        trap_slot = base + _capi.OFF_TRAP
        error = instantiate(pre, cx, base, trap_slot)
        trap = _u64(trap_slot).value
        if not error and not trap:
            func = base + _capi.OFF_FUNC
            if not _capi.export_get(cx, base, entry, len(entry), func) or \
                    _u8(func).value != _capi.EXTERN_FUNC:
                raise InternalError(f"export {entry.decode()!r} vanished after instantiation")
            raw = base + _capi.OFF_RAW
            if args:
                ctypes.memmove(raw, args, len(args))
            error = _capi.call_unchecked(cx, func + 8, raw, nslots, trap_slot)
            trap = _u64(trap_slot).value
            if not error and not trap:
                inv.memory_size = memory_size(inv, cx)
        _capi.get_fuel(cx, base + _capi.OFF_FUEL)
        return error or 0, trap, _u64(base + _capi.OFF_FUEL).value
    finally:
        # A host function that kept `call` must not reach the freed store or its memory.
        inv.cx, inv.span, inv.mem = 0, None, 0
        inv.close_view()
        _capi.store_delete(store)


def memory_size(inv: Invocation, cx: int) -> int:
    """Bytes of the instance's exported ``memory`` now (0 if it exports none).

    Read once, when the call has returned, as the execution's peak: a wasm linear memory only
    grows (there is no shrinking instruction) and every execution has a fresh store, so its
    size at the end is the largest it ever was; no growth callback is needed. One C call when
    a host function already looked the memory up, two otherwise.
    """
    mem = inv.mem
    if not mem:
        slot = inv.base + _capi.OFF_MEMORY
        if not _capi.export_get(cx, inv.base + _capi.OFF_INSTANCE, b"memory", 6, slot) or \
                _u8(slot).value != _capi.EXTERN_MEMORY:
            return 0
        mem = slot + 8
    return int(_capi.memory_data_size(cx, mem))


def _cause(message: str) -> str:
    """wasmtime's message without the backtrace: the text after 'Caused by:'."""
    head, _, cause = message.partition("Caused by:")
    return " ".join((cause or head).split())


#: Trap codes after which wasmtime's fuel counter is exact. Cranelift keeps fuel in a
#: register and writes it back at calls, returns and ``unreachable``; a trap raised by a
#: signal (out-of-bounds access, division by zero, ...) skips the write-back, so the counter
#: reads as if almost nothing ran (measured: a 10M-iteration loop then a division by zero
#: read as fee 0). After any other trap the whole fee limit is charged: deterministic, and a
#: contract cannot burn CPU for free by ending in a fault.
EXACT_FUEL_TRAPS = frozenset({_capi.TRAP_UNREACHABLE, _capi.TRAP_OUT_OF_FUEL})


def failure(inv: Invocation, error: int, trap: int,
            fee_limit: int) -> tuple[CoordinatorError, bool]:
    """The typed error of a failed run (frees the error and trap objects), and whether the
    fuel counter can be trusted for its fee (see ``EXACT_FUEL_TRAPS``)."""
    code, message = (None, "")
    if trap:
        code, message = _capi.take_trap(trap)
    if error:
        error_message = _capi.take_error(error)
        message = message or error_message
    exact = inv.stop is None and (inv.error is not None or code in EXACT_FUEL_TRAPS)
    return _failure(inv, code, message, fee_limit, trap), exact


def _failure(inv: Invocation, code: int | None, message: str, fee_limit: int,
             trap: int) -> CoordinatorError:
    if inv.error is not None:
        return inv.error
    reason = inv.stop
    if reason is None and code == _capi.TRAP_INTERRUPT:
        reason = inv.context.token.reason or ErrorKind.CANCELLED
    if reason is ErrorKind.TIMEOUT:
        return Timeout("execution passed its deadline")
    if reason is not None:
        return Cancelled("execution cancelled")
    if code == _capi.TRAP_OUT_OF_FUEL:
        return FeeExhausted(f"fee limit {fee_limit} exhausted")
    if code == _capi.TRAP_STACK_OVERFLOW:
        return Trap("stack overflow: the guest exceeded its call stack (wasmtime.max_wasm_stack)")
    if trap:
        return Trap(_cause(message))
    cause = _cause(message)
    if "maximum concurrent limit" in cause:  # the pooling allocator has no free slot
        return EngineError(f"no free wasm instance slot: {cause} "
                           "(wasmtime.instance_pool_slots)")
    return Trap(f"instantiation or call failed: {cause}")
