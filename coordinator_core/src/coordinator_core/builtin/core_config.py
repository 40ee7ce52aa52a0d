"""Built-in plugin: config sections of the core's own components (``[dispatch]``)."""

from __future__ import annotations

import attrs

from coordinator_core.dispatcher import STRATEGIES
from coordinator_hookspecs import ConfigSection, hookimpl


def _strategy(_i: object, _a: attrs.Attribute[str], value: str) -> None:
    if value not in STRATEGIES:
        raise ValueError(f"unknown strategy {value!r}; choose one of {', '.join(STRATEGIES)}")


@attrs.frozen
class DispatchSettings:
    """``[dispatch]``: how an engine is chosen when several can run a resource type."""

    strategy: str = attrs.field(default="least_loaded", validator=_strategy)
    #: resource type -> engine name, e.g. ``{ wasm = "wasmtime" }``
    pin_types: dict[str, str] = attrs.field(factory=dict)
    #: resource id -> engine name
    pin_resources: dict[str, str] = attrs.field(factory=dict)
    #: resource type -> engine features it needs, e.g. ``{ wasm = ["fuel"] }``
    required_features: dict[str, list[str]] = attrs.field(factory=dict)
    #: seconds between health checks of an engine (and before retrying an unhealthy one)
    health_interval: float = 5.0


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name="dispatch", type=DispatchSettings)]
