"""Registration records -> a frozen registry the pipeline walks as plain tuples.

Runs once per coordinator: calls every registration hook, checks each record's type and
protocol, refuses duplicate names loudly (naming both providers, conda's habit), applies
``[records.<name>]`` overrides (enable/disable, order) and sorts. Nothing here runs per
execution.

:class:`Registry` is the one table of kinds: each of its record fields names the record
class it holds, and the field ``engines`` is filled by the hook
``coordinator_register_engines`` (a test checks every hookspec agrees). :data:`KINDS` adds
what the core checks of each kind and is derived from it.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from typing import Any

import attrs

from coordinator_core.log import logger
from coordinator_core.plugin_host.config import Config, RecordOverride
from coordinator_core.plugin_host.host import PluginError, PluginHost
from coordinator_hookspecs import (
    AuditSinkRecord,
    CliCommand,
    ConfigSection,
    EffectProcessorRecord,
    EngineRecord,
    ExecutorRecord,
    HostFunctionRecord,
    MetricsSinkRecord,
    QuotaPolicyRecord,
    ValidatorRecord,
)

HOOK_PREFIX = "coordinator_register_"


@attrs.frozen
class Conflict:
    """Two plugins registered one name of one kind (first registered first)."""

    kind: str
    name: str
    plugins: tuple[str, str]

    def __str__(self) -> str:
        return (
            f"duplicate {self.kind} name {self.name!r}: registered by plugin {self.plugins[0]}"
            f" and by plugin {self.plugins[1]}"
        )


@attrs.frozen
class Registry:
    """Every record, checked and ordered, with the plugin that provided it."""

    engines: tuple[EngineRecord, ...]
    validators: tuple[ValidatorRecord, ...]
    quota_policies: tuple[QuotaPolicyRecord, ...]
    metrics_sinks: tuple[MetricsSinkRecord, ...]
    audit_sinks: tuple[AuditSinkRecord, ...]
    effect_processors: tuple[EffectProcessorRecord, ...]
    host_functions: tuple[HostFunctionRecord, ...]
    #: where engines run (``[dispatch] executor`` names one)
    executors: tuple[ExecutorRecord, ...]
    providers: dict[tuple[str, str], str]
    #: Only a registry built for diagnosis (``coordinator plugins``) keeps conflicts; the
    #: second record of each stays out of the tuples above.
    conflicts: tuple[Conflict, ...] = ()

    def provider(self, kind: str, name: str) -> str:
        return self.providers.get((kind, name), "?")

    def describe(self) -> dict[str, list[dict[str, Any]]]:
        """Plain data for ``coordinator plugins``: each record with its provider; a name two
        plugins registered is listed once per plugin and marked ``conflict``."""
        out: dict[str, list[dict[str, Any]]] = {}
        for kind in KINDS:
            records = getattr(self, kind.field)
            rows = [_describe(r, self.provider(kind.label, r.name)) for r in records]
            for clash in self.conflicts:
                if clash.kind == kind.label:
                    for row in rows:
                        if row["name"] == clash.name:
                            row["conflict"] = True
                    rows.append({"name": clash.name, "plugin": clash.plugins[1], "conflict": True})
            out[kind.field] = rows
        return out


@attrs.frozen
class Kind:
    """One kind of registration: where its records go and what a record must provide."""

    field: str  # the Registry field; the hook is coordinator_register_<field>
    target: str  # the record attribute holding the implementation
    required: tuple[str, ...]
    any_of: tuple[str, ...] = ()
    order_field: str = "order"
    record: type = object
    label: str = ""

    @property
    def hook(self) -> str:
        return HOOK_PREFIX + self.field


def _kinds(*partial: Kind) -> tuple[Kind, ...]:
    """Complete each kind from the Registry field it names: record class and label."""
    hints = typing.get_type_hints(Registry)
    out = []
    for kind in partial:
        record = typing.get_args(hints[kind.field])[0]
        words = re.findall(r"[A-Z][a-z]*", record.__name__.removesuffix("Record"))
        out.append(attrs.evolve(kind, record=record, label=" ".join(words).lower()))
    return tuple(out)


KINDS: tuple[Kind, ...] = _kinds(
    Kind("engines", "engine", ("execute",)),
    Kind("validators", "validator", (), ("validate_execution", "validate_deploy"), "priority"),
    Kind("quota_policies", "policy", ("acquire", "release")),
    Kind("metrics_sinks", "sink", ("record",)),
    Kind("audit_sinks", "sink", ("emit",)),
    Kind("effect_processors", "processor", ("prepare", "commit", "rollback")),
    Kind("host_functions", "func", ("__call__",), order_field=""),
    Kind("executors", "install", ("__call__",), order_field=""),
)


def _describe(record: Any, provider: str) -> dict[str, Any]:
    data: dict[str, Any] = {"name": record.name, "plugin": provider}
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if isinstance(value, (str, int, float, bool)) and field.name != "name":
            data[field.name] = value
        elif isinstance(value, (frozenset, tuple)):
            data[field.name] = sorted(value) if isinstance(value, frozenset) else list(value)
    return data


def _ordered(host: PluginHost, a: str, b: str) -> tuple[str, str]:
    return (a, b) if host.rank(a) <= host.rank(b) else (b, a)


def collect_sections(host: PluginHost) -> dict[str, type]:
    """Every declared config section; a name declared twice is refused (``-`` and ``_``
    are one character in section names)."""
    sections: dict[str, type] = {}
    owners: dict[str, tuple[str, str]] = {}  # canonical name -> (plugin, declared name)
    for plugin, item in host.collect(HOOK_PREFIX + "config_sections"):
        if not isinstance(item, ConfigSection):
            host.drop(plugin, f"returned {type(item).__name__} instead of ConfigSection")
            continue
        key = item.name.replace("-", "_")
        if key in owners and owners[key][0] != plugin:
            first, second = _ordered(host, owners[key][0], plugin)
            raise PluginError(
                f"config section [{item.name}] is declared by plugin {first} and by plugin "
                f"{second}"
            )
        sections[item.name], owners[key] = item.type, (plugin, item.name)
    return sections


def collect_cli_commands(
    host: PluginHost, conflicts: list[Conflict] | None = None
) -> dict[str, tuple[str, CliCommand]]:
    """Every CLI sub-command by name, with its plugin. A duplicate is refused, or, given
    ``conflicts``, noted there (the first registered keeps the name)."""
    commands: dict[str, tuple[str, CliCommand]] = {}
    for plugin, item in host.collect(HOOK_PREFIX + "cli_commands"):
        if not isinstance(item, CliCommand):
            host.drop(plugin, f"returned {type(item).__name__} instead of CliCommand")
            continue
        if item.name in commands:
            first, second = _ordered(host, commands[item.name][0], plugin)
            clash = Conflict("CLI command", item.name, (first, second))
            if conflicts is None:
                raise PluginError(str(clash))
            conflicts.append(clash)
            if first == commands[item.name][0]:
                continue
        commands[item.name] = (plugin, item)
    return commands


def build_registry(
    host: PluginHost, config: Config, *, keep_conflicts: bool = False
) -> Registry:
    """Call every registration hook once and freeze the result. Two plugins registering
    one name is a ``PluginError`` naming both, unless ``keep_conflicts`` (diagnosis): then
    the first registered keeps the name and the clash is listed in ``conflicts``."""
    collected: dict[str, tuple[Any, ...]] = {}
    providers: dict[tuple[str, str], str] = {}
    conflicts: list[Conflict] = []
    for kind in KINDS:
        records: dict[str, Any] = {}
        for plugin, record in host.collect(kind.hook, config=config):
            problem = _check(kind, record)
            if problem:
                host.drop(plugin, problem)
                continue
            key = (kind.label, record.name)
            if key in providers:
                first, second = _ordered(host, providers[key], plugin)
                clash = Conflict(kind.label, record.name, (first, second))
                if not keep_conflicts:
                    raise PluginError(str(clash))
                conflicts.append(clash)
                if first == providers[key]:
                    continue
            providers[key] = plugin
            records[record.name] = record
        ordered = _apply_overrides(kind, list(records.values()), config.records)
        collected[kind.field] = tuple(ordered)
    return Registry(**collected, providers=providers, conflicts=tuple(conflicts))


def _check(kind: Kind, record: Any) -> str | None:
    if not isinstance(record, kind.record):
        return f"{kind.hook} returned {type(record).__name__} instead of {kind.record.__name__}"
    target = getattr(record, kind.target)
    missing = [m for m in kind.required if not callable(getattr(target, m, None))]
    if kind.any_of and not any(callable(getattr(target, m, None)) for m in kind.any_of):
        missing.append(" or ".join(kind.any_of))
    if missing:
        return f"{kind.label} {getattr(record, 'name', '?')!r} lacks {', '.join(missing)}"
    return None


def _apply_overrides(
    kind: Kind, records: list[Any], overrides: dict[str, RecordOverride]
) -> list[Any]:
    out: list[Any] = []
    for record in records:
        override = overrides.get(record.name)
        if override is not None:
            if not override.enabled:
                logger.info("{} {} disabled by [records.{}]", kind.label, record.name, record.name)
                continue
            if override.order is not None and kind.order_field:
                record = attrs.evolve(record, **{kind.order_field: override.order})
        out.append(record)
    if kind.order_field:
        key: Callable[[Any], Any] = lambda r: (getattr(r, kind.order_field), r.name)  # noqa: E731
        out.sort(key=key)
    return out
