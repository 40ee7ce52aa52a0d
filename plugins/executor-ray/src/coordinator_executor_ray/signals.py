"""Keep the process's fault-signal handlers across ``ray.init``.

wasmtime turns a trap inside wasm code (``unreachable``, an out-of-bounds access, a stack
overflow) into a Python exception through its handlers for SIGILL, SIGSEGV, SIGBUS and
SIGFPE, installed when the first wasmtime engine of the process is built. ``ray.init``
installs crash handlers of its own over them, and ``ray.shutdown`` resets them to the
default action; a wasm trap in the coordinator's process (an engine left on threads, or any
coordinator after a Ray one closed) would then kill the process instead of failing one
execution. So the handlers in place before ``ray.init`` and ``ray.shutdown`` are saved with
``sigaction`` and put back after each. The cost: Ray's own crash report for a fault in the
driver is not printed.
"""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FAULT_SIGNALS = (signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE)
#: Larger than ``struct sigaction`` on every Linux ABI (152 bytes on x86-64 glibc).
_SIGACTION_BYTES = 512


def keeping_fault_handlers(start: Callable[[], T]) -> T:
    """Run ``start`` (``ray.init`` or ``ray.shutdown``), then restore the fault-signal handlers."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        sigaction = libc.sigaction
    except (OSError, AttributeError):  # no C library to ask: nothing to keep
        return start()
    saved = {}
    for number in FAULT_SIGNALS:
        buffer = ctypes.create_string_buffer(_SIGACTION_BYTES)
        if sigaction(int(number), None, buffer) == 0:
            saved[number] = buffer
    try:
        return start()
    finally:
        for number, buffer in saved.items():
            sigaction(int(number), buffer, None)
