"""The ``[wasmtime]`` config section: limits, caps, cache sizes and fees, with safe defaults.

Every field can be set in the config file (``[wasmtime] memory_limit_bytes = 67108864``) or
by environment (``COORDINATOR_WASMTIME__MEMORY_LIMIT_BYTES=67108864``). The static limits
follow CosmWasm's spirit: a contract that is too big in any dimension is refused at deploy,
before anything expensive (compiling) happens.
"""

from __future__ import annotations

from typing import Any

import attrs

KIB = 1024
MIB = 1024 * KIB

#: wasmtime derives its stack limit from the stack pointer at entry, so a ``max_wasm_stack``
#: above the calling thread's free stack segfaults the process (reproduced with wasmtime 50).
#: Python threads get 8 MiB by default; nested (hybrid) executions stack several limits on one
#: thread, hence the hard ceiling well below that.
MAX_WASM_STACK_CEILING = 2 * MIB


def _positive(_i: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _not_negative(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


#: Address space the pooling allocator reserves per instance slot: wasmtime's default 4 GiB
#: memory reservation plus its guard (measured: 256 slots took VmSize from 12 MB to ~1 TB).
POOL_SLOT_RESERVATION = 4 * 1024 * MIB + 32 * MIB
MAX_POOL_SLOTS = 4096  # 16 TiB of the 128 TiB user address space


def _pool_slots(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= MAX_POOL_SLOTS:
        raise ValueError(f"{attribute.name} must be between 0 (no pooling) and "
                         f"{MAX_POOL_SLOTS}, got {value!r}")


def _stack(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 64 * KIB <= value <= MAX_WASM_STACK_CEILING:
        raise ValueError(
            f"{attribute.name} must be between 65536 and {MAX_WASM_STACK_CEILING} bytes "
            f"(a stack limit above the thread's stack segfaults the process), got {value!r}"
        )


def _pos() -> Any:
    return attrs.field(validator=_positive)


@attrs.frozen
class WasmtimeSettings:
    """Settings of the WASM engine plugin (section ``[wasmtime]``)."""

    # -- static limits checked at deploy (and again before any compile) --------------------
    #: Largest module accepted, bytes.
    max_module_bytes: int = attrs.field(default=4 * MIB, validator=_positive)
    #: Functions defined by the module (a compile bomb has tens of thousands).
    max_functions: int = attrs.field(default=10_000, validator=_positive)
    #: Params of any function type.
    max_function_params: int = attrs.field(default=100, validator=_positive)
    #: Results of any function type.
    max_function_results: int = attrs.field(default=16, validator=_positive)
    #: Locals declared by any one function.
    max_function_locals: int = attrs.field(default=10_000, validator=_positive)
    #: Imports of the module.
    max_imports: int = attrs.field(default=100, validator=_positive)
    #: Exports of the module.
    max_exports: int = attrs.field(default=200, validator=_positive)
    #: Tables of the module.
    max_tables: int = attrs.field(default=4, validator=_positive)
    #: Initial size of any table, and the runtime cap on table elements.
    max_table_elements: int = attrs.field(default=10_000, validator=_positive)
    #: Initial linear memory, 64 KiB pages.
    max_initial_memory_pages: int = attrs.field(default=256, validator=_positive)
    #: Wall-clock cap on compiling one module, seconds (a stalled compile is abandoned).
    compile_timeout: float = attrs.field(default=10.0, validator=_positive)

    # -- runtime limits per execution ------------------------------------------------------
    #: Linear memory a store may grow to, bytes (memory.grow past it returns -1).
    memory_limit_bytes: int = attrs.field(default=32 * MIB, validator=_positive)
    #: Stack wasm code may use, bytes (see ``MAX_WASM_STACK_CEILING``).
    max_wasm_stack: int = attrs.field(default=512 * KIB, validator=_stack)
    #: Executions that may hold a wasm instance at the same time (nested ones included);
    #: wasmtime's pooling allocator keeps that many memory slots warm. 0: map memory per
    #: execution instead (slower, unbounded). One more concurrent execution fails with
    #: ``engine_error`` naming this key.
    instance_pool_slots: int = attrs.field(default=256, validator=_pool_slots)
    #: Bytes of a reused memory slot reset with memset instead of being unmapped (no page
    #: faults for small contracts on the next use).
    pool_keep_resident_bytes: int = attrs.field(default=1 * MIB, validator=_not_negative)
    #: Interval of the epoch ticker that drives deadlines and cancellation, seconds.
    epoch_tick: float = attrs.field(default=0.005, validator=_positive)
    #: Input bytes an execution may receive.
    max_input_bytes: int = attrs.field(default=1 * MIB, validator=_positive)
    #: Output bytes an execution may write.
    max_output_bytes: int = attrs.field(default=1 * MIB, validator=_positive)
    #: Storage key size, bytes.
    max_key_bytes: int = attrs.field(default=64 * KIB, validator=_positive)
    #: Storage value size, bytes.
    max_value_bytes: int = attrs.field(default=128 * KIB, validator=_positive)
    #: Event payload size, bytes.
    max_event_bytes: int = attrs.field(default=64 * KIB, validator=_positive)
    #: Log line size, bytes.
    max_log_bytes: int = attrs.field(default=8 * KIB, validator=_positive)
    #: Effects (writes, events, logs) one execution may produce.
    max_effects: int = attrs.field(default=4096, validator=_positive)
    #: Total bytes of those effects.
    max_effect_bytes: int = attrs.field(default=8 * MIB, validator=_positive)

    # -- fees (fuel units) ------------------------------------------------------------------
    #: Charged for every call of a built-in host function.
    fee_per_host_call: int = attrs.field(default=50, validator=_not_negative)
    #: Charged per byte a built-in host function moves across the boundary.
    fee_per_byte: int = attrs.field(default=1, validator=_not_negative)
    #: Extra charge of ``storage_set`` and ``storage_remove``.
    fee_storage_write: int = attrs.field(default=500, validator=_not_negative)

    # -- compiled-module cache --------------------------------------------------------------
    #: Compiled modules kept in memory (LRU).
    memory_cache_entries: int = attrs.field(default=256, validator=_positive)
    #: Keep serialised artifacts under ``<data_dir>/wasmtime-cache``.
    disk_cache: bool = True
    #: Disk budget of those artifacts, bytes (oldest removed first).
    disk_cache_max_bytes: int = attrs.field(default=512 * MIB, validator=_positive)

    def pool_spec(self) -> dict[str, int] | None:
        """Settings of wasmtime's pooling allocator (``_capi.make_engine``), None if off."""
        slots = self.instance_pool_slots
        if not slots:
            return None
        return {"total_memories": slots, "total_core_instances": slots,
                "total_tables": slots * self.max_tables, "max_tables_per_module": self.max_tables,
                "max_memories_per_module": 1, "max_memory_size": self.memory_limit_bytes,
                "table_elements": self.max_table_elements,
                "linear_memory_keep_resident": self.pool_keep_resident_bytes,
                "table_keep_resident": min(self.pool_keep_resident_bytes, 64 * KIB)}
