"""The resource use of one execution: the CPU time of its engine call, and the memory its
engine reports on ``EngineResult``.

CPU is read from the calling thread's CPU clock (``time.thread_time_ns``) before and after
``engine.execute``: it counts what that thread ran, whoever else runs at the same time, and
nothing while it waits. A nested (hybrid) execution runs on its parent's thread inside the
parent's engine call, so the parent's figure includes its children's, and each child has its
own. Work an engine does on other threads or processes is the engine's to add
(``EngineResult.cpu_seconds``: the worker processes of ``[dispatch] executor = "processes"``
report the CPU clock of the worker's thread this way).

What the engine reports is checked like its fee: a malformed figure would otherwise fail in
the commit, where nothing can report it cleanly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from time import thread_time_ns
from typing import Any

from coordinator_hookspecs import EngineError, EngineResult

__all__ = ["engine_use", "thread_time_ns", "usage_detail"]


def engine_use(outcome: EngineResult, engine: str) -> tuple[int, Mapping[str, int] | None, float]:
    """(memory bytes, usage breakdown, CPU seconds spent elsewhere) of an engine's result,
    refused as ``engine_error`` when malformed."""
    memory, usage, cpu = outcome.memory_bytes, outcome.usage, outcome.cpu_seconds
    if type(memory) is not int or memory < 0:
        raise EngineError(f"engine {engine} reported memory_bytes {memory!r}, not a "
                          "non-negative integer", source=engine)
    if usage is not None:
        # A plain loop over a dict: ``isinstance(..., Mapping)`` and a generator cost more
        # than the rest of this check together, on every execution.
        if type(usage) is not dict and not isinstance(usage, Mapping):
            raise EngineError(f"engine {engine} reported usage {usage!r}, not a mapping",
                              source=engine)
        for key, value in usage.items():
            if type(key) is not str or type(value) is not int or value < 0:
                raise EngineError(f"engine {engine} reported usage {dict(usage)!r}, not a "
                                  "mapping of names to non-negative integers", source=engine)
    if (type(cpu) is not float or cpu != 0.0) and not (
        type(cpu) in (int, float) and cpu >= 0 and math.isfinite(cpu)
    ):
        raise EngineError(f"engine {engine} reported cpu_seconds {cpu!r}, not a finite "
                          "non-negative number", source=engine)
    return memory, usage, float(cpu)


def usage_detail(detail: dict[str, Any], use: tuple[int, int]) -> None:
    """Add an execution's resource use, (CPU nanoseconds, memory bytes), to its audit
    record's ``detail`` (sealed with it).

    Two integers: every record is encoded as canonical JSON to be hashed, and a float (its
    shortest repr) or a nested mapping costs several times what an integer does there. The
    engine's breakdown (``usage``) stays on the result for the same reason."""
    detail["cpu_ns"] = use[0]
    detail["memory_bytes"] = use[1]
