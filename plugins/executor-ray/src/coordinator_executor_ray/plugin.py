"""The ``ray`` executor: ``[dispatch] executor = "ray"`` runs the engines of ``[ray] engines``
in Ray actors (``group.py``, ``actor.py``); the ``[ray]`` section (``settings.py``).

Importing this module does not import Ray: a coordinator that runs on threads or worker
processes loads the plugin (entry points) without paying for it.
"""

from __future__ import annotations

from typing import Any

from coordinator_executor_ray.settings import RaySettings
from coordinator_hookspecs import ConfigSection, ExecutorRecord, InvalidRequest, hookimpl


def install(coordinator: Any) -> tuple[str, ...]:
    """Connect to the cluster (or start a local one), start every engine's actors, wait
    until they are ready, then swap them into the dispatcher (all or nothing)."""
    from coordinator_executor_ray.cluster import Connection, alive_nodes, fits
    from coordinator_executor_ray.group import ActorGroup
    from coordinator_executor_ray.placement import node_needs

    settings: RaySettings = coordinator.config.section("ray")
    dispatcher = coordinator.dispatcher
    installed = [b.name for b in dispatcher.engines]
    names = tuple(settings.engines) or tuple(installed)
    for label, asked in (("engines", names), ("resources", tuple(settings.resources))):
        unknown = [n for n in asked if n not in installed]
        if unknown:
            raise InvalidRequest(f"[ray] {label} names {', '.join(unknown)}, not installed "
                                 f"(installed engines: {', '.join(installed) or 'none'})")
    if not names:
        return ()
    recipes = {name: coordinator.engine_recipe((name,)) for name in names}
    connection = Connection(settings)
    groups: list[ActorGroup] = []
    try:
        nodes = alive_nodes()
        for name in names:
            needs = node_needs(settings.resources.get(name, {}))
            fit = [n["node_id"] for n in nodes if fits(n, needs)]
            if not fit:
                raise InvalidRequest(
                    f"no node of the Ray cluster has what engine {name}'s actors need "
                    f"({needs}; [ray] resources.{name}); nodes have: "
                    + "; ".join(str(n["resources"]) for n in nodes))
            connection.acquire()
            groups.append(ActorGroup(name, recipes[name], settings, fit, connection.node_id,
                                     coordinator.resource, connection.address,
                                     on_close=connection.release))
        for group in groups:
            group.start()
    except BaseException:
        for group in groups:
            group.close()
        if not groups:
            connection.acquire()
            connection.release()
        raise
    for name, group in zip(names, groups, strict=True):
        coordinator.run_engines_on((name,), group, capacity=group.capacity, executor="ray")
    return names


def describe(config: Any) -> dict[str, Any]:
    """The cluster as ``coordinator plugins`` shows it: with ``[ray] address``, its alive
    nodes and the coordinators' engine actors running there; without, the local cluster a
    coordinator starts when it opens."""
    settings: RaySettings = config.section("ray")
    data: dict[str, Any] = {"address": settings.address or "local (started at open)",
                            "engines": list(settings.engines) or "every engine",
                            "actors_per_node": settings.actors_per_node}
    if not settings.address:
        return data
    import ray

    from coordinator_executor_ray.cluster import alive_nodes, engine_actors
    from coordinator_executor_ray.signals import keeping_fault_handlers

    connected = ray.is_initialized()
    try:
        if not connected:
            keeping_fault_handlers(lambda: ray.init(address=settings.address,
                                                    log_to_driver=False,
                                                    configure_logging=False))
        data["nodes"] = alive_nodes()
        data["actors"] = engine_actors()
    except Exception as exc:
        data["error"] = f"cannot reach the cluster: {type(exc).__name__}: {exc}"
    finally:
        if not connected:
            keeping_fault_handlers(ray.shutdown)
    return data


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name="ray", type=RaySettings)]


@hookimpl
def coordinator_register_executors(config: Any) -> list[ExecutorRecord]:
    return [ExecutorRecord(name="ray", install=install, describe=describe,
                           description="engines run in Ray actors ([ray] section)")]
