"""Ray actor options of one engine's actors from ``[ray] resources.<engine>``."""

from __future__ import annotations

from typing import Any

from coordinator_executor_ray.settings import ACTOR_OPTIONS

_RAY_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}


def actor_options(needs: dict[str, float]) -> dict[str, Any]:
    """``{num_cpus = 1, accelerator_x = 1}`` -> ``ray.remote`` options. An engine without an
    entry asks for no CPU, so actors never wait for one a busy node has given away."""
    options: dict[str, Any] = {"num_cpus": float(needs.get("num_cpus", 0))}
    for key in ACTOR_OPTIONS[1:]:
        if key in needs:
            options[key] = needs[key]
    custom = {k: float(v) for k, v in needs.items() if k not in ACTOR_OPTIONS}
    if custom:
        options["resources"] = custom
    return options


def node_needs(needs: dict[str, float]) -> dict[str, float]:
    """What a node must have in total for one actor, in Ray's resource names."""
    return {_RAY_NAMES.get(k, k): float(v) for k, v in needs.items()}
