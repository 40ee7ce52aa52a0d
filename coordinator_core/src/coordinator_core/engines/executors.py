"""Built-in plugin: the ``threads`` and ``processes`` executors, and the start-up step that
installs the one ``[dispatch] executor`` names.

An executor decides where engines run. ``threads`` leaves every engine on the coordinator's
own threads; ``processes`` moves the engines of ``[dispatch] process_engines`` into a pool of
worker processes (``engines/processes/``). Plugins register more with the hook
``coordinator_register_executors`` (``coordinator-executor-ray`` adds ``ray``). The pipeline
around an engine — validation, security, quota, the commit of effects and the audit record
by the one store — stays in the coordinator whichever executor runs the engine.
"""

from __future__ import annotations

from typing import Any

from coordinator_hookspecs import ExecutorRecord, InvalidRequest, hookimpl


def _install_threads(coordinator: Any) -> tuple[str, ...]:
    return ()


def _install_processes(coordinator: Any) -> tuple[str, ...]:
    # Imported here: a coordinator on threads never loads multiprocessing machinery.
    from coordinator_core.engines.processes.engine import install_process_pool

    return install_process_pool(coordinator, coordinator.config.section("dispatch"))


@hookimpl
def coordinator_register_executors(config: Any) -> list[ExecutorRecord]:
    return [
        ExecutorRecord(name="threads", install=_install_threads,
                       description="engines run on the coordinator's threads"),
        ExecutorRecord(name="processes", install=_install_processes,
                       description="engines run in a pool of worker processes"),
    ]


def executor_record(registry: Any, name: str) -> ExecutorRecord:
    """The executor called ``name``; refused naming the installed ones when there is none."""
    for record in registry.executors:
        if record.name == name:
            return record
    installed = ", ".join(r.name for r in registry.executors) or "none"
    raise InvalidRequest(f"[dispatch] executor = {name!r} is not installed; installed "
                         f"executors: {installed}")


def install_executor(coordinator: Any) -> tuple[str, ...]:
    """Install the executor ``[dispatch] executor`` names; the engines it moved."""
    name = coordinator.config.section("dispatch").executor
    return executor_record(coordinator.registry, name).install(coordinator)


def describe_executors(registry: Any, config: Any) -> dict[str, dict[str, Any]]:
    """Each installed executor for ``coordinator plugins``: its description, and what its
    ``describe`` tells (a cluster's nodes); a ``describe`` that fails is reported, not
    raised, since the command diagnoses."""
    out: dict[str, dict[str, Any]] = {}
    for record in registry.executors:
        entry: dict[str, Any] = {"description": record.description}
        if record.describe is not None:
            try:
                entry.update(record.describe(config))
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
        out[record.name] = entry
    return out
