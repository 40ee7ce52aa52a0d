"""Built-in plugin: config sections of the core's own components (``[dispatch]``), and the
start-up step that moves engines into worker processes when ``executor = "processes"``.

Example::

    [dispatch]
    strategy = "affinity"                 # least_loaded | round_robin | power_of_two | affinity
    pin_types = { wasm = "wasmtime" }
    health_interval = 5.0
    executor = "processes"                # threads (default) | processes | a plugin's
    processes = 2
    process_engines = ["wasmtime"]        # empty: every engine

See docs/scaling.md for which executor to use when.
"""

from __future__ import annotations

from typing import Any

import attrs

from coordinator_core.engines.dispatcher import STRATEGIES
from coordinator_core.plugin_host.config import positive
from coordinator_hookspecs import ConfigSection, hookimpl

#: The executors the core registers itself (``engines/executors.py``); plugins add more.
EXECUTORS = ("threads", "processes")


def _executor_name(_i: object, attribute: attrs.Attribute[str], value: str) -> None:
    # Which names exist is known once plugins have registered: checked at open.
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must name an executor, e.g. {', '.join(EXECUTORS)}")
def _one_of(choices: tuple[str, ...]) -> Any:
    def check(_i: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ValueError(
                f"unknown {attribute.name} {value!r}; choose one of {', '.join(choices)}"
            )

    return check



@attrs.frozen
class DispatchSettings:
    """``[dispatch]``: how an engine is chosen when several can run a resource type, and
    whether engines run in the coordinator's threads or in worker processes."""

    strategy: str = attrs.field(default="least_loaded", validator=_one_of(STRATEGIES))
    #: resource type -> engine name, e.g. ``{ wasm = "wasmtime" }``
    pin_types: dict[str, str] = attrs.field(factory=dict)
    #: resource id -> engine name
    pin_resources: dict[str, str] = attrs.field(factory=dict)
    #: resource type -> engine features it needs, e.g. ``{ wasm = ["fuel"] }``
    required_features: dict[str, list[str]] = attrs.field(factory=dict)
    #: seconds between health checks of an engine (and before retrying an unhealthy one)
    health_interval: float = attrs.field(default=5.0, validator=positive)
    #: ``threads``: engines run on the calling/worker thread (best for executions of 1 ms and
    #: more: wasmtime and onnxruntime release the GIL). ``processes``: each engine named in
    #: ``process_engines`` runs in a pool of worker processes (best for many short executions).
    #: A plugin's executor (``ray``) is named the same way; an unknown name is refused at open.
    executor: str = attrs.field(default="threads", validator=_executor_name)
    #: worker processes of the pool (shared by every engine moved into it)
    processes: int = attrs.field(default=2, validator=positive)
    #: engines moved into the pool; empty means every engine
    process_engines: list[str] = attrs.field(factory=list)
    #: seconds a worker gets to stop after a cancel or timeout before it is killed and replaced
    process_kill_grace: float = attrs.field(default=1.0, validator=positive)
    #: seconds a worker process may take to load its plugins and report ready
    process_start_timeout: float = attrs.field(default=60.0, validator=positive)


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name="dispatch", type=DispatchSettings)]
