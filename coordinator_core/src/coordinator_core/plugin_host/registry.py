"""Registration records -> a frozen registry the pipeline walks as plain tuples.

Runs once per coordinator: calls every registration hook, checks each record's type and
protocol, refuses duplicate names loudly (naming both providers, conda's habit), applies
``[records.<name>]`` overrides (enable/disable, order) and sorts. Nothing here runs per
execution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from loguru import logger

from coordinator_core.plugin_host.config import Config, RecordOverride
from coordinator_core.plugin_host.host import PluginError, PluginHost
from coordinator_hookspecs import (
    AuditSinkRecord,
    CliCommand,
    ConfigSection,
    EffectProcessorRecord,
    EngineRecord,
    HostFunctionRecord,
    MetricsSinkRecord,
    QuotaPolicyRecord,
    ValidatorRecord,
)


@attrs.frozen
class Kind:
    """One kind of registration: its hook, record class, and what a record must provide."""

    label: str
    hook: str
    record: type
    target: str  # the attribute holding the implementation
    required: tuple[str, ...]
    any_of: tuple[str, ...] = ()
    order_field: str = "order"


KINDS: dict[str, Kind] = {
    k.label: k
    for k in (
        Kind("engine", "coordinator_register_engines", EngineRecord, "engine", ("execute",)),
        Kind(
            "validator",
            "coordinator_register_validators",
            ValidatorRecord,
            "validator",
            (),
            ("validate_execution", "validate_deploy"),
            order_field="priority",
        ),
        Kind(
            "quota policy",
            "coordinator_register_quota_policies",
            QuotaPolicyRecord,
            "policy",
            ("acquire", "release"),
        ),
        Kind(
            "metrics sink",
            "coordinator_register_metrics_sinks",
            MetricsSinkRecord,
            "sink",
            ("record",),
        ),
        Kind("audit sink", "coordinator_register_audit_sinks", AuditSinkRecord, "sink", ("emit",)),
        Kind(
            "effect processor",
            "coordinator_register_effect_processors",
            EffectProcessorRecord,
            "processor",
            ("prepare", "commit", "rollback"),
        ),
        Kind(
            "host function",
            "coordinator_register_host_functions",
            HostFunctionRecord,
            "func",
            ("__call__",),
            order_field="",
        ),
    )
}


#: Registry attribute holding each kind's records.
FIELD_OF_KIND = {
    "engine": "engines",
    "validator": "validators",
    "quota policy": "quota_policies",
    "metrics sink": "metrics_sinks",
    "audit sink": "audit_sinks",
    "effect processor": "effect_processors",
    "host function": "host_functions",
}


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
    providers: dict[tuple[str, str], str]

    def provider(self, kind: str, name: str) -> str:
        return self.providers.get((kind, name), "?")

    def describe(self) -> dict[str, list[dict[str, Any]]]:
        """Plain data for ``coordinator plugins``: each record with its provider."""
        return {
            field: [_describe(r, self.provider(label, r.name)) for r in getattr(self, field)]
            for label, field in FIELD_OF_KIND.items()
        }


def _describe(record: Any, provider: str) -> dict[str, Any]:
    data: dict[str, Any] = {"name": record.name, "plugin": provider}
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if isinstance(value, (str, int, float, bool)) and field.name != "name":
            data[field.name] = value
        elif isinstance(value, (frozenset, tuple)):
            data[field.name] = sorted(value) if isinstance(value, frozenset) else list(value)
    return data


def collect_sections(host: PluginHost) -> dict[str, type]:
    """Every declared config section; a name declared twice is refused."""
    sections: dict[str, type] = {}
    owners: dict[str, str] = {}
    for plugin, item in host.collect("coordinator_register_config_sections"):
        if not isinstance(item, ConfigSection):
            host.drop(plugin, f"returned {type(item).__name__} instead of ConfigSection")
            continue
        if item.name in sections and owners[item.name] != plugin:
            raise PluginError(
                f"config section [{item.name}] is declared by plugin {owners[item.name]} "
                f"and by plugin {plugin}"
            )
        sections[item.name], owners[item.name] = item.type, plugin
    return sections


def collect_cli_commands(host: PluginHost) -> dict[str, tuple[str, CliCommand]]:
    """Every CLI sub-command by name, with its plugin; duplicates refused."""
    commands: dict[str, tuple[str, CliCommand]] = {}
    for plugin, item in host.collect("coordinator_register_cli_commands"):
        if not isinstance(item, CliCommand):
            host.drop(plugin, f"returned {type(item).__name__} instead of CliCommand")
            continue
        if item.name in commands:
            raise PluginError(
                f"CLI command {item.name!r} is registered by plugin {commands[item.name][0]} "
                f"and by plugin {plugin}"
            )
        commands[item.name] = (plugin, item)
    return commands


def build_registry(host: PluginHost, config: Config) -> Registry:
    """Call every registration hook once and freeze the result."""
    collected: dict[str, list[Any]] = {}
    providers: dict[tuple[str, str], str] = {}
    for kind in KINDS.values():
        records: list[Any] = []
        for plugin, record in host.collect(kind.hook, config=config):
            problem = _check(kind, record)
            if problem:
                host.drop(plugin, problem)
                continue
            key = (kind.label, record.name)
            if key in providers:
                raise PluginError(
                    f"duplicate {kind.label} name {record.name!r}: registered by plugin "
                    f"{providers[key]} and by plugin {plugin}"
                )
            providers[key] = plugin
            records.append(record)
        collected[kind.label] = _apply_overrides(kind, records, config.records)
    return Registry(
        **{FIELD_OF_KIND[label]: tuple(records) for label, records in collected.items()},
        providers=providers,
    )


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
