"""Registration records: what a plugin hands the core from a registration hook.

Each record is frozen and validated on construction (a bad name fails where the plugin
built it, not deep in the pipeline). The core collects the records once at start-up,
refuses duplicate names (naming both providers), applies config, and freezes tuples that
the hot path walks in plain Python.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import attrs

from coordinator_hookspecs.view import CoordinatorView

#: What a CLI command's ``run`` receives to open a coordinator (a context manager).
CoordinatorOpener = Callable[[], AbstractContextManager[CoordinatorView]]

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_WASM_TYPES = frozenset({"i32", "i64", "f32", "f64"})


def _valid_name(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{attribute.name} {value!r} is not a valid plugin name: use 1-63 characters of "
            "lowercase letters, digits, '_', '-' or '.', starting with a letter"
        )


def _types(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _frozen(value: Any) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _frozen_set(value: Any) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class EngineRecord:
    """An execution engine.

    ``resource_types``: what it runs (``{"wasm"}``). ``features``: what it can do
    (``fuel``, ``cancel``, ``deadline``, ``batching``...), matched against what a resource type
    needs. ``concurrency``: executions it may run at once (0 = unbounded). ``order``: lower is
    preferred when several engines tie.
    """

    name: str = attrs.field(validator=_valid_name)
    engine: Any
    resource_types: frozenset[str] = attrs.field(converter=_frozen_set)
    features: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen_set)
    concurrency: int = 0
    order: int = 100


@attrs.frozen
class ValidatorRecord:
    """A security validator (fails closed: an exception is a rejection).

    ``priority``: lower runs first; the first hard rejection stops the walk. ``weight``:
    multiplies the risk score a validator's verdict carries; the weighted sum reaching the
    configured threshold rejects. ``applies_to``: resource types, None for all.
    ``cacheable``: its execution verdict depends only on (resource, caller) and may be cached.
    """

    name: str = attrs.field(validator=_valid_name)
    validator: Any
    priority: int = 100
    weight: float = 1.0
    applies_to: frozenset[str] | None = attrs.field(default=None, converter=_frozen)
    cacheable: bool = False


@attrs.frozen
class QuotaPolicyRecord:
    """A quota policy (fails closed). ``order``: lower acquires first, releases last."""

    name: str = attrs.field(validator=_valid_name)
    policy: Any
    order: int = 100
    applies_to: frozenset[str] | None = attrs.field(default=None, converter=_frozen)


@attrs.frozen
class MetricsSinkRecord:
    """A metrics sink (fails open: an exception is logged once and never changes a result)."""

    name: str = attrs.field(validator=_valid_name)
    sink: Any
    order: int = 100


@attrs.frozen
class AuditSinkRecord:
    """An audit sink (fails open: the record is always kept in the core's audit log)."""

    name: str = attrs.field(validator=_valid_name)
    sink: Any
    order: int = 100


@attrs.frozen
class EffectProcessorRecord:
    """An effect processor for the effect ``kinds`` it names (prepare/commit/rollback)."""

    name: str = attrs.field(validator=_valid_name)
    processor: Any
    kinds: frozenset[str] = attrs.field(converter=_frozen_set)
    order: int = 100


def _check_types(
    _instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    bad = [t for t in value if t not in _WASM_TYPES]
    if bad:
        raise ValueError(f"{attribute.name} has unknown value types {bad}; use i32, i64, f32, f64")


@attrs.frozen
class HostFunctionRecord:
    """A host function offered to guests (module ``env`` by default).

    A guest may import it only if its resource was granted ``capability`` at deploy.
    ``func(call, *args)`` receives a ``HostCall`` (see protocols) and the guest's arguments,
    and returns None, one value, or a tuple matching ``results``. ``fee`` is charged per call.
    """

    name: str = attrs.field(validator=_valid_name)
    capability: str = attrs.field(validator=_valid_name)
    func: Callable[..., Any]
    params: tuple[str, ...] = attrs.field(default=(), converter=_types, validator=_check_types)
    results: tuple[str, ...] = attrs.field(default=(), converter=_types, validator=_check_types)
    fee: int = 0
    module: str = "env"


@attrs.frozen
class ExecutorRecord:
    """Where engines run: ``[dispatch] executor = "<name>"`` selects one record.

    ``install(coordinator)`` runs once while the coordinator opens, after the registry is
    frozen and before the first execution: it may run engines elsewhere (the recipe to rebuild
    them is ``coordinator.engine_recipe(names)``; ``coordinator.run_engines_on(names,
    backend, capacity=, executor=)`` swaps in stand-ins for a ``RemoteEngines`` backend; see
    ``coordinator_hookspecs.executors``) and returns the names of the engines it moved
    (empty: every engine stays on the coordinator's threads). Whatever
    it starts is stopped by the stand-ins' ``close``. ``describe(config)``, optional, returns
    plain data for ``coordinator plugins`` (a cluster's nodes, say) without opening a
    coordinator.
    """

    name: str = attrs.field(validator=_valid_name)
    install: Callable[[Any], tuple[str, ...]]
    describe: Callable[[Any], dict[str, Any]] | None = None
    description: str = ""


@attrs.frozen
class ConfigSection:
    """A plugin's config section ``[name]`` structured into the attrs class ``type``.

    The core builds it with its converter (unknown keys refused, errors naming the key) from
    the TOML file and ``COORDINATOR_<NAME>__<KEY>`` environment variables.
    """

    name: str = attrs.field(validator=_valid_name)
    type: type


@attrs.frozen
class CliCommand:
    """A ``coordinator`` sub-command contributed by a plugin.

    ``add_arguments(parser)`` fills an ``argparse`` sub-parser; ``run(args, open_coordinator)``
    returns the exit code, where ``open_coordinator()`` opens a coordinator honouring the
    global options (data dir, config) as a context manager yielding a ``CoordinatorView``.
    """

    name: str = attrs.field(validator=_valid_name)
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, CoordinatorOpener], int]
