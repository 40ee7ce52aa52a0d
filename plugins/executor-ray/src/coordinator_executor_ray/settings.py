"""The ``[ray]`` config section: which cluster, how many engine actors, what they need.

Example::

    [dispatch]
    executor = "ray"

    [ray]
    address = "ray://head.example:10001"   # none: a local cluster for the coordinator's life
    actors_per_node = 2
    engines = ["onnxruntime"]               # empty: every engine; the rest stay on threads
    resources = { onnxruntime = { num_cpus = 1, num_gpus = 1 } }
    retry_on_worker_death = true
"""

from __future__ import annotations

from typing import Any

import attrs

#: The keys of ``[ray] resources.<engine>`` that are Ray actor options; any other key is a
#: custom resource (``{ accelerator_x = 1 }``).
ACTOR_OPTIONS = ("num_cpus", "num_gpus", "memory")


def _positive(_i: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _resources(_i: object, attribute: attrs.Attribute[Any],
               value: dict[str, dict[str, float]]) -> None:
    for engine, needs in value.items():
        if not isinstance(needs, dict):
            raise ValueError(f"{attribute.name}.{engine} must be a table of resource amounts")
        for key, amount in needs.items():
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
                raise ValueError(f"{attribute.name}.{engine}.{key} must be a non-negative "
                                 f"number, not {amount!r}")


@attrs.frozen
class RaySettings:
    """``[ray]``: where the engine actors run and how they are placed."""

    #: the cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); none: start a
    #: local cluster when the coordinator opens and shut it down when it closes
    address: str | None = None
    #: CPUs of the local cluster (none: the machine's); ignored with ``address``
    num_cpus: int | None = None
    #: start Ray's dashboard with the local cluster
    dashboard: bool = False
    #: engine actors per alive node, for each engine that runs on Ray
    actors_per_node: int = attrs.field(default=1, validator=_positive)
    #: executions one actor runs at a time
    actor_concurrency: int = attrs.field(default=1, validator=_positive)
    #: engines whose executions run on Ray; empty means every engine
    engines: list[str] = attrs.field(factory=list)
    #: engine -> what each of its actors needs: ``num_cpus``, ``num_gpus``, ``memory``
    #: (bytes) and any custom resource a node advertises
    resources: dict[str, dict[str, float]] = attrs.field(factory=dict, validator=_resources)
    #: re-run once, on another actor, an execution whose actor died before it returned a
    #: result (safe: the coordinator had committed none of its effects); never one that made
    #: nested calls, which ran through the coordinator's pipeline (quota, fee) already
    retry_on_worker_death: bool = True
    #: seconds an actor gets to stop after a cancel or timeout before it is killed and replaced
    kill_grace: float = attrs.field(default=1.0, validator=_positive)
    #: seconds the actors may take to start and load their engines
    start_timeout: float = attrs.field(default=120.0, validator=_positive)
    #: actors on the coordinator's own node read committed state from its SQLite file
    #: (read-only), as worker processes do; off, every read is a round trip to the coordinator
    local_state_reads: bool = True
    #: Ray's worker logs copied to the coordinator's stderr
    log_to_driver: bool = False
