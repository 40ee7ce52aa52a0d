"""The state of one running execution, as host functions see it (the ``HostCall`` protocol).

Everything a host function touches is per execution: the guest memory of *this* store, the
output buffer, the buffered effects, the storage overlay, the fee not yet taken from the
store's fuel, and the error a host function raised (wasmtime-py keeps that last one in a
module global, which mixes up threads; we never use it). Every pointer and length coming from
the guest is checked here: negative, overflowing or out-of-memory ranges raise ``Trap``.
"""

from __future__ import annotations

import ctypes
from typing import Any

from coordinator_engine_wasmtime import _capi
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_hookspecs import (
    CoordinatorError,
    Effect,
    ErrorKind,
    ExecutionContext,
    FeeExhausted,
    InternalError,
    Trap,
)

_ABSENT = object()
#: How a query's trap names the host call that tried to leave an effect.
_WHAT = {"state.set": "storage_set", "state.delete": "storage_remove", "event": "emit_event",
         "log": "log"}
#: Pending host fees above this are taken from the fuel at the end of the host call.
SETTLE_AT = 10_000


def _guest_view(base: int, size: int) -> memoryview:
    """A memoryview of ``size`` bytes of guest memory at ``base``: slicing it costs a quarter
    of a ``ctypes.string_at`` call, and host calls read and write guest memory several times
    per execution."""
    return memoryview(_capi.byte_array(size).from_address(base)).cast("B")


class Invocation:
    """One execution's host-side state; the ``call`` argument of every host function."""

    __slots__ = (
        "base",
        "context",
        "cx",
        "effect_bytes",
        "effects",
        "error",
        "hosts",
        "input",
        "mem",
        "memory_size",
        "output",
        "pending",
        "resource_id",
        "settings",
        "span",
        "stop",
        "view",
        "writes",
    )

    def __init__(self, context: ExecutionContext, settings: WasmtimeSettings, data: bytes,
                 scratch: int, hosts: tuple[Any, ...]) -> None:
        self.context = context
        self.settings = settings
        self.cx = 0  # the store's context pointer, set once the store exists
        self.base = scratch  # address of the execution's scratch buffer (see _capi.OFF_*)
        self.mem = 0  # address of the memory extern once looked up
        self.memory_size = 0  # bytes of the exported memory when the call returned
        self.input = data
        self.output = bytearray()
        self.effects: list[Effect] = []
        self.effect_bytes = 0
        self.writes: dict[bytes, bytes | None] = {}
        self.pending = 0  # host fees not yet taken from the store's fuel
        self.error: CoordinatorError | None = None  # what a host function raised
        self.stop: ErrorKind | None = None  # why the epoch callback interrupted
        self.resource_id = context.resource.id
        self.hosts = hosts  # the engine's host table, indexed by the trampoline's env
        self.span: tuple[int, int] | None = None  # (base, known size) of the guest memory
        self.view: memoryview | None = None  # the guest memory's bytes, ``span`` long

    # -- guest memory ------------------------------------------------------------------------
    def _memory(self) -> tuple[int, int]:
        """(base address, size) of the guest memory, asked from wasmtime.

        Kept for the whole execution (``span``): the engine is configured so that memory
        never moves, and memory never shrinks, so a kept size is a lower bound and ``_range``
        asks again only when a range goes past it.
        """
        if not self.cx:
            raise Trap("the execution is over: its guest memory is gone")
        mem = self.mem
        if not mem:
            if not ctypes.c_uint64.from_address(self.base + _capi.OFF_INSTANCE).value:
                # The instance is written back only when instantiation returns: during the
                # start function it does not exist yet, and asking wasmtime for an export of
                # a zeroed instance panics inside the C API (the process aborts).
                raise Trap("host functions taking pointers cannot be called from the "
                           "module's start function (its memory is not reachable yet)")
            slot = self.base + _capi.OFF_MEMORY
            found = _capi.export_get(self.cx, self.base + _capi.OFF_INSTANCE, b"memory", 6, slot)
            if not found or ctypes.c_uint8.from_address(slot).value != _capi.EXTERN_MEMORY:
                raise Trap("the module does not export a memory named 'memory', which host "
                           "functions taking pointers need")
            mem = self.mem = slot + 8
        span = self.span = (_capi.memory_data(self.cx, mem), _capi.memory_data_size(self.cx, mem))
        self.close_view()
        self.view = _guest_view(*span)
        return span

    def close_view(self) -> None:
        """Release the view of the guest memory (at the end of the execution: the memory is
        then reset or unmapped, and a kept view must fail instead of reading it)."""
        view, self.view = self.view, None
        if view is not None:
            try:
                view.release()
            except BufferError:  # a slice of it is still held somewhere: left to the GC
                pass

    def _range(self, ptr: int, length: int, what: str) -> memoryview:
        """The guest memory's view, once ``[ptr, ptr + length)`` is known to lie inside it."""
        if ptr < 0 or length < 0:
            raise Trap(f"{what}: negative pointer or length (ptr={ptr}, len={length})")
        span = self.span
        if span is None or ptr + length > span[1]:
            span = self._memory()  # first use, or the guest may have grown its memory
            if ptr + length > span[1]:
                raise Trap(f"{what}: range [{ptr}, {ptr + length}) is outside the guest "
                           f"memory of {span[1]} bytes")
        return self.view  # type: ignore[return-value]

    def read(self, ptr: int, length: int, what: str = "read") -> bytes:
        """``length`` bytes of guest memory at ``ptr`` (checked)."""
        return self._range(ptr, length, what)[ptr:ptr + length].tobytes()

    def write(self, ptr: int, data: bytes, what: str = "write") -> None:
        """Copy ``data`` into guest memory at ``ptr`` (checked)."""
        self._range(ptr, len(data), what)[ptr:ptr + len(data)] = data

    # -- effects and storage -----------------------------------------------------------------
    def emit(self, effect: Effect) -> None:
        """Buffer an effect; applied only if the whole execution succeeds. A query's
        (``context.read_only``) traps instead: it must not change state or emit."""
        if self.context.read_only:
            raise Trap(f"{_WHAT.get(effect.kind, effect.kind)} inside a query: a query is "
                       "read-only (no storage writes, events or log lines); use execute")
        size = len(effect.key) + len(effect.value)
        if len(self.effects) >= self.settings.max_effects:
            raise Trap(f"too many effects: the limit is {self.settings.max_effects} per "
                       "execution (wasmtime.max_effects)")
        if self.effect_bytes + size > self.settings.max_effect_bytes:
            raise Trap(f"effects exceed {self.settings.max_effect_bytes} bytes per execution "
                       "(wasmtime.max_effect_bytes)")
        self.effect_bytes += size
        self.effects.append(effect)

    def storage_get(self, key: bytes) -> bytes | None:
        """The value as this execution sees it: its own pending writes over committed state."""
        value = self.writes.get(key, _ABSENT)
        if value is _ABSENT:
            return self.context.state_get(key)
        return value  # type: ignore[return-value]

    def storage_put(self, key: bytes, value: bytes | None) -> None:
        self.emit(Effect("state.set" if value is not None else "state.delete",
                         self.resource_id, key, value or b""))
        self.writes[key] = value

    # -- fee ---------------------------------------------------------------------------------
    def charge(self, fee: int) -> None:
        """Add ``fee`` to this execution's fee.

        Host fees are taken from the store's fuel in batches (``SETTLE_AT``) and at the end:
        two C calls per host call would dominate a cheap one. The total is exact either way;
        a guest that ran out can at most run ``SETTLE_AT`` fuel further before it is stopped,
        and its result is ``fee_exhausted`` just the same.
        """
        if not isinstance(fee, int) or fee < 0:
            raise InternalError(f"charge() needs a non-negative int fee, got {fee!r}")
        self.pending += fee

    def settle(self) -> None:
        """Take pending host fees from the store's fuel; ``FeeExhausted`` when it runs out."""
        pending, self.pending = self.pending, 0
        cx, slot = self.cx, self.base + _capi.OFF_FUEL
        if not cx:  # a host function kept `call` past its execution: nothing left to charge
            raise Trap("the execution is over: no fee can be charged")
        _capi.get_fuel(cx, slot)
        left = ctypes.c_uint64.from_address(slot).value
        if pending > left:
            _capi.set_fuel(cx, 0)
            raise FeeExhausted(f"fee limit {self.context.fee_limit} exhausted by a host call")
        _capi.set_fuel(cx, left - pending)

    def fee_remaining(self) -> int:
        """Fee left for the rest of this execution."""
        if self.pending or not self.cx:
            self.settle()
        slot = self.base + _capi.OFF_FUEL
        _capi.get_fuel(self.cx, slot)
        return int(ctypes.c_uint64.from_address(slot).value)
