"""The coordinator's connection to a Ray cluster: join ``[ray] address``, or start a local
cluster for the coordinator's lifetime (as Prefect's ``RayTaskRunner`` does when it is given
no address), and the cluster's alive nodes.

A process holds one Ray connection. When this process is connected already (a test session,
an application that called ``ray.init`` itself) the coordinator uses that connection and
leaves it open at close; otherwise it connects, and disconnects at close — which, for a local
cluster it started, stops the cluster's processes.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from coordinator_executor_ray.settings import RaySettings
from coordinator_executor_ray.signals import keeping_fault_handlers

#: The Ray namespace of the engine actors (named ``<engine>-<slot>-<random>``).
NAMESPACE = "coordinator"

#: Ray's usage statistics stay off unless the environment asks for them.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


class Connection:
    """One coordinator's use of the process's Ray connection (counted: every engine on Ray
    releases it at close; the last release disconnects, if this coordinator connected)."""

    def __init__(self, settings: RaySettings) -> None:
        import ray

        self._lock = threading.Lock()
        self.users = 0
        self.owned = not ray.is_initialized()
        if self.owned:
            options: dict[str, Any] = {"include_dashboard": settings.dashboard,
                                       "log_to_driver": settings.log_to_driver,
                                       "configure_logging": False}
            if settings.address:
                options["address"] = settings.address
            else:
                options["num_cpus"] = settings.num_cpus
            keeping_fault_handlers(lambda: ray.init(**options))
        self.address = settings.address or "local"
        self.node_id = ray.get_runtime_context().get_node_id()

    def acquire(self) -> None:
        with self._lock:
            self.users += 1

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            last = self.users <= 0
        if last and self.owned:
            import ray

            self.owned = False
            keeping_fault_handlers(ray.shutdown)


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's alive nodes: id, address and total resources."""
    import ray

    return [{"node_id": n["NodeID"], "address": n.get("NodeManagerAddress", ""),
             "resources": dict(n.get("Resources", {}))}
            for n in ray.nodes() if n.get("Alive")]


def fits(node: dict[str, Any], needs: dict[str, float]) -> bool:
    """Whether ``node`` has in total what one actor ``needs`` (Ray's own resource names:
    ``CPU``, ``GPU``, ``memory``, custom ones)."""
    have = node["resources"]
    return all(have.get(key, 0.0) >= amount for key, amount in needs.items() if amount)


def engine_actors() -> list[str]:
    """The names of every coordinator's engine actors alive in the cluster."""
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a.get("namespace") == NAMESPACE)
