"""Configuration: attrs classes built by a cattrs converter from TOML and the environment.

Layout of a config file (every key optional)::

    [coordinator]              # SPEC.md's fields and the core's own
    default_fee_limit = 10_000_000
    max_execution_timeout = 30.0

    [records.no-mallory]       # enable/disable/reorder any registered record by name
    enabled = false

    [store]                    # a section per plugin (built-ins included), see
    durability = "full"        # `coordinator config show`

Environment variables override the file: ``COORDINATOR_<KEY>`` for ``[coordinator]`` keys
(``COORDINATOR_DEFAULT_FEE_LIMIT=5000``) and ``COORDINATOR_<SECTION>__<KEY>`` for sections
(``COORDINATOR_STORE__DURABILITY=full``). Values are read as TOML literals when they parse
(numbers, booleans, arrays) and as strings otherwise. Unknown keys are refused with an
error naming them (DESIGN.md §5.8).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

from coordinator_hookspecs import InvalidRequest

ENV_PREFIX = "COORDINATOR_"
#: Highest accepted ``max_depth``: each level stacks an engine call on one native thread.
MAX_DEPTH = 8
#: Environment variables with their own meaning, never read as config keys.
_RESERVED_ENV = frozenset({"DATA_DIR", "CONFIG", "DISABLE_PLUGINS", "STRICT_PLUGINS", "LOG_LEVEL"})


def default_data_dir() -> Path:
    """``$COORDINATOR_DATA_DIR``, else ``$XDG_DATA_HOME/coordinator`` (``~/.local/share``)."""
    explicit = os.environ.get(ENV_PREFIX + "DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "coordinator"


def positive(_i: object, attribute: attrs.Attribute[Any], value: float) -> None:
    # NaN compares false with everything: without isfinite it would pass and, as a timeout,
    # switch the deadline off.
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive finite number, got {value!r}")


def _finite(_i: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value!r}")


def _depth(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= MAX_DEPTH:
        raise ValueError(f"{attribute.name} must be between 0 and {MAX_DEPTH}, got {value!r}")


@attrs.frozen
class CoreSettings:
    """The ``[coordinator]`` section: SPEC.md's configuration fields plus the core's own."""

    #: Emit audit records to audit sinks (SPEC: EnableAuditEvents).
    enable_audit_events: bool = True
    #: Keep the durable, hash-chained audit log (SPEC: EnableAuditTracking).
    enable_audit_tracking: bool = True
    #: Run quota policies (SPEC: EnableQuotaManagement).
    enable_quota_management: bool = True
    #: Run security validators at execution time (SPEC: EnableSecurityValidation).
    #: Deploy-time validation always runs: it protects the engines themselves.
    enable_security_validation: bool = True
    #: Upper bound on any execution's timeout, seconds (SPEC: MaxExecutionTimeout).
    max_execution_timeout: float = attrs.field(default=30.0, validator=positive)
    #: Timeout of a request that names none, seconds.
    default_timeout: float = attrs.field(default=5.0, validator=positive)
    #: Fee limit of a request that names none (SPEC: DefaultExecutionFeeLimit).
    default_fee_limit: int = attrs.field(default=10_000_000, validator=positive)
    #: Worker threads behind submit() and execute_async().
    workers: int = attrs.field(default=2, validator=positive)
    #: Executions submit() lets wait for a worker; beyond it a new one is refused at once
    #: (``quota_exceeded``, recorded like any refusal) instead of growing the queue unbounded.
    max_queued: int = attrs.field(default=10_000, validator=positive)
    #: Finished executions whose outcome status() reads from memory; older ones come from the
    #: durable log.
    ledger_retention: int = attrs.field(default=10_000, validator=positive)
    #: Depth limit of nested (hybrid) executions.
    max_depth: int = attrs.field(default=2, validator=_depth)
    #: Capabilities that let a resource write its state: executions of such a resource are
    #: serialised from their first read to their commit (no lost updates).
    state_capabilities: tuple[str, ...] = ("storage",)
    #: Risk score (sum of validator score x weight) at which an execution is rejected.
    risk_threshold: float = attrs.field(default=1.0, validator=_finite)
    #: Re-raise plugin loading errors instead of logging and skipping them.
    strict_plugins: bool = False
    #: Plugin names (entry-point names or built-in names) never loaded.
    disable_plugins: tuple[str, ...] = ()


@attrs.frozen
class RecordOverride:
    """``[records.<name>]``: switch a registered record off or change its position."""

    enabled: bool = True
    order: int | None = None


def make_converter() -> cattrs.Converter:
    """The converter every config section goes through: unknown keys are errors."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(Path, lambda value, _t: Path(value))
    converter.register_unstructure_hook(Path, str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook_func(
        lambda t: getattr(t, "__origin__", None) is frozenset,
        lambda v, _t: frozenset(_strings(v)),
    )
    # A string where a list of names belongs ("storage", or "a,b" from the environment) is
    # a list of names, never the tuple of its characters.
    converter.register_structure_hook_func(
        lambda t: t == tuple[str, ...], lambda v, _t: tuple(_strings(v))
    )
    converter.register_unstructure_hook(frozenset, sorted)
    return converter


def _structure_bool(value: Any, _type: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {value!r}")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return [str(v) for v in value]


CONVERTER = make_converter()


def structure(data: Any, cls: type, where: str) -> Any:
    """Structure ``data`` into ``cls``; raise ``InvalidRequest`` naming every bad key."""
    try:
        return CONVERTER.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        lines = cattrs.transform_error(exc, path=where, format_exception=_describe_error)
        raise InvalidRequest("invalid configuration: " + "; ".join(lines)) from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"invalid configuration: {exc} @ {where}") from None


def _describe_error(exc: BaseException, type_: Any) -> str:
    """cattrs' wording, plus the validator's own message (which names the field)."""
    if isinstance(exc, ValueError) and not isinstance(exc, cattrs.BaseValidationError):
        return f"invalid value ({exc})"
    return cattrs.v.format_exception(exc, type_)


@attrs.define
class Config:
    """The effective configuration: core settings, record overrides, plugin sections.

    Plugins get it in registration hooks and read their own part with :meth:`section`.
    """

    core: CoreSettings
    data_dir: Path
    records: dict[str, RecordOverride]
    raw_sections: dict[str, dict[str, Any]]
    source: Path | None = None
    _sections: dict[str, Any] = attrs.field(factory=dict)

    def bind_sections(self, section_types: Mapping[str, type]) -> list[str]:
        """Structure every declared plugin section; return undeclared section names."""
        for name, cls in section_types.items():
            self._sections[name] = structure(self.raw_sections.get(name, {}), cls, f"[{name}]")
        return sorted(set(self.raw_sections) - set(section_types))

    def section(self, name: str) -> Any:
        """The structured section ``name``; ``KeyError`` if no plugin declared it."""
        return self._sections[name]

    def as_dict(self) -> dict[str, Any]:
        """The effective configuration as plain data (``coordinator config show``)."""
        out: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "source": str(self.source) if self.source else None,
            "coordinator": CONVERTER.unstructure(self.core),
        }
        if self.records:
            out["records"] = CONVERTER.unstructure(self.records)
        for name in sorted(self._sections):
            out[name] = CONVERTER.unstructure(self._sections[name])
        return out


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :]
        if key in _RESERVED_ENV or not key:
            continue
        section, _, field = key.partition("__")
        if not field:
            section, field = "coordinator", section
        out.setdefault(
            section.lower().replace("_", "-") if section != "coordinator" else section, {}
        )[field.lower()] = _env_value(text)
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the TOML file at ``path`` (or ``$COORDINATOR_CONFIG``), apply environment
    variables, then ``overrides`` (a mapping shaped like the file), and validate the core
    part. Plugin sections are validated once plugins have declared them."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG") or None
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = Path(path)
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidRequest(f"config file {source} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"config file {source} is not valid TOML: {exc}") from None
    data = _merge(data, _env_overrides(environ))
    if overrides:
        data = _merge(data, overrides)
    core_data = dict(data.pop("coordinator", {}))
    file_data_dir = core_data.pop("data_dir", None)
    records = structure(data.pop("records", {}), dict[str, RecordOverride], "[records]")
    core = structure(core_data, CoreSettings, "[coordinator]")
    disabled = environ.get(ENV_PREFIX + "DISABLE_PLUGINS")
    if disabled:
        core = attrs.evolve(core, disable_plugins=(*core.disable_plugins, *_strings(disabled)))
    if environ.get(ENV_PREFIX + "STRICT_PLUGINS", "").lower() in ("1", "true", "yes"):
        core = attrs.evolve(core, strict_plugins=True)
    if data_dir is not None:
        resolved = Path(data_dir)
    elif environ.get(ENV_PREFIX + "DATA_DIR"):
        resolved = Path(environ[ENV_PREFIX + "DATA_DIR"])
    elif file_data_dir is not None:
        resolved = Path(file_data_dir)
    else:
        resolved = default_data_dir()
    return Config(core=core, data_dir=resolved, records=records, raw_sections=data, source=source)
