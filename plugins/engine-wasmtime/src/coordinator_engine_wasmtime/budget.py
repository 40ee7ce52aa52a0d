"""The native resources a configuration needs, checked before any wasmtime object exists.

The engine is built on first use (``lazy.py``), but a configuration the process cannot run
must still be refused when the coordinator opens. These checks read only the settings and
the process limits, so they run at registration without importing wasmtime.
"""

from __future__ import annotations

import resource
import threading

from coordinator_engine_wasmtime.settings import POOL_SLOT_RESERVATION
from coordinator_hookspecs import InvalidRequest

#: Native stack taken by the Python and ctypes frames between two nested executions, and
#: kept free below the deepest one (measured: a 2 MiB guest stack left ~2 MiB of an 8 MiB
#: thread at depth 2 and overflowed it at depth 3).
STACK_MARGIN = 1024 * 1024


def thread_stack_bytes() -> int:
    """The stack size of threads that run executions: ``threading.stack_size()`` when set,
    else the process's stack limit (glibc sizes new threads by ``RLIMIT_STACK``), else 8 MiB."""
    explicit = threading.stack_size()
    if explicit:
        return explicit
    soft, _hard = resource.getrlimit(resource.RLIMIT_STACK)
    return soft if 0 < soft != resource.RLIM_INFINITY else 8 * 1024 * 1024


def check_stack_budget(max_wasm_stack: int, max_depth: int) -> None:
    """Refuse a configuration whose nested executions could overflow the native stack.

    wasmtime derives each store's stack limit from the stack pointer at entry, so nested
    (hybrid) executions stack ``max_depth + 1`` guest stacks on one thread; more than the
    thread has is a segfault, not a trap."""
    need = (max_depth + 1) * (max_wasm_stack + STACK_MARGIN)
    have = thread_stack_bytes()
    if need > have:
        raise InvalidRequest(
            f"invalid configuration: [wasmtime] max_wasm_stack = {max_wasm_stack} with "
            f"[coordinator] max_depth = {max_depth} needs {need} bytes of native stack "
            f"({max_depth + 1} nested guest stacks plus {STACK_MARGIN} each), but threads "
            f"have {have}: lower max_wasm_stack or max_depth"
        )


def check_address_space(slots: int) -> None:
    """Refuse a pool the process cannot map: wasmtime aborts the process (a panic in the C
    API) when its pooling allocator's reservation fails, instead of returning an error."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    need = slots * POOL_SLOT_RESERVATION
    if soft != resource.RLIM_INFINITY and need > soft // 2:
        raise InvalidRequest(
            f"invalid configuration: [wasmtime] instance_pool_slots = {slots} reserves about "
            f"{need >> 30} GiB of address space, but the process may map {soft >> 30} GiB "
            "(ulimit -v): lower it, or set 0 to turn pooling off"
        )
