"""Engines for the process-pool tests, in a module worker processes can import by name.

A worker rebuilds inline plugin objects by unpickling them, which imports their class's
module: test modules (imported by pytest under private names) cannot be, so the engines the
tests move into worker processes live here. ``test_procpool.py`` puts this directory on
``sys.path`` for the parent and, through ``spawn``, for the workers.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from coordinator_hookspecs import (
    EngineRecord,
    EngineResult,
    ExecutionContext,
    ExecutionRequest,
    InvalidRequest,
    hookimpl,
)


class ToolEngine:
    """Resource type ``tool``. Entries: ``pid`` (output: the worker's pid), ``block``
    (sleeps ``args[0]`` seconds ignoring cancel and deadline: a stuck engine), ``crash``
    (the process exits at once, as a segfaulting native engine would), ``nested`` (calls
    ``ctx.invoke`` on the resource id given as input)."""

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        entry = ctx.request.entry
        if entry == "pid":
            return EngineResult(output=os.getpid(), fee_used=1)
        if entry == "block":
            time.sleep(float((ctx.request.args or (1.0,))[0]))
            return EngineResult(output=b"woke", fee_used=1)
        if entry == "crash":
            os._exit(3)
        if entry == "nested":
            if ctx.invoke is None:
                raise InvalidRequest("nesting is not allowed here")
            child = ctx.invoke(ExecutionRequest(resource_id=ctx.request.input.decode()))
            return EngineResult(output=child.output, fee_used=1 + child.fee_used)
        raise InvalidRequest(f"tool engine has no entry {entry!r}")


class ToolPlugin:
    """Registers the ``tool`` engine; in a worker process it refuses to (its hook raises)
    while ``PROCPOOL_TOOL_BROKEN`` is set, to test workers that cannot start."""

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        if os.environ.get("PROCPOOL_TOOL_BROKEN") and multiprocessing.parent_process():
            raise RuntimeError("tool engine broken in worker processes")
        return [EngineRecord(name="tool", engine=ToolEngine(), resource_types={"tool"})]
