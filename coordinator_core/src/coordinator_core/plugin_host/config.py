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
error naming them (DESIGN.md §5.8). In section names ``-`` and ``_`` are the same
character, so ``COORDINATOR_AUDIT_JSONL__PATH`` sets ``[audit_jsonl]`` and
``COORDINATOR_ENTRY_GUARD__RISK_PER_KIB`` sets ``[entry-guard]`` (an environment variable
cannot spell a hyphen). A section no loaded plugin declares is ignored with a warning that
suggests the closest declared name.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

from coordinator_core.log import logger
from coordinator_core.plugin_host.sources import ENV_PREFIX, read_sources, section_key
from coordinator_hookspecs import InvalidRequest

#: Highest accepted ``max_depth``: each level stacks an engine call on one native thread.
MAX_DEPTH = 8


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


def _fraction(_i: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{attribute.name} must be a fraction between 0 and 1, got {value!r}")


def _depth(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= MAX_DEPTH:
        raise ValueError(f"{attribute.name} must be between 0 and {MAX_DEPTH}, got {value!r}")


def _routing(_i: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in ("affinity", "load"):
        raise ValueError(f"{attribute.name} must be \"affinity\" or \"load\", got {value!r}")


def _writer_mode(_i: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in ("own", "serve", "connect"):
        raise ValueError(f"{attribute.name} must be \"own\", \"serve\" or \"connect\", "
                         f"got {value!r}")


class ProcessCount(int):
    """``[coordinator] processes``: a count of worker processes, written as a number or
    ``"auto"`` (one per core this process may run on)."""

    @classmethod
    def parse(cls, value: Any, _type: Any = None) -> ProcessCount:
        if value == "auto":
            return cls(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else os.cpu_count() or 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 256:
            raise ValueError(f"processes must be \"auto\" or a number from 0 to 256, "
                             f"got {value!r}")
        return cls(value)


@attrs.frozen
class CoreSettings:
    """The ``[coordinator]`` section: SPEC.md's configuration fields plus the core's own."""

    #: Emit audit records to audit sinks (SPEC: EnableAuditEvents).
    enable_audit_events: bool = True
    #: Keep the durable, hash-chained audit log (SPEC: EnableAuditTracking).
    enable_audit_tracking: bool = True
    #: Run quota policies (SPEC: EnableQuotaManagement).
    enable_quota_management: bool = True
    #: Measure the CPU time of every engine call and keep it, with the memory the engine
    #: reports, in the result, the audit record and the metrics (docs/architecture.md,
    #: "Resource use"). Off saves the two thread-clock reads per execution.
    measure_resources: bool = True
    #: Run security validators at execution time (SPEC: EnableSecurityValidation).
    #: Deploy-time validation always runs: it protects the engines themselves.
    enable_security_validation: bool = True
    #: Upper bound on any execution's timeout, seconds (SPEC: MaxExecutionTimeout).
    max_execution_timeout: float = attrs.field(default=30.0, validator=positive)
    #: Timeout of a request that names none, seconds.
    default_timeout: float = attrs.field(default=5.0, validator=positive)
    #: Fee limit of a request that names none (SPEC: DefaultExecutionFeeLimit).
    default_fee_limit: int = attrs.field(default=10_000_000, validator=positive)
    #: Worker threads behind submit() and execute_async() (in each worker process, when
    #: ``processes`` is set).
    workers: int = attrs.field(default=2, validator=positive)
    #: Worker processes running the whole pipeline (docs/scaling.md): 0 runs it in this
    #: process; ``"auto"`` starts one per core. Needs an on-disk data directory.
    processes: ProcessCount = attrs.field(default=ProcessCount(0))
    #: How executions of a stateful resource pick a worker process: ``affinity`` (always the
    #: one its id hashes to: its state cache stays warm, its lock uncontended) or ``load``
    #: (the least loaded, like stateless work; the state lock still serialises them).
    process_routing: str = attrs.field(default="affinity", validator=_routing)
    #: Who writes the data directory's SQLite database: ``own`` (this coordinator, taking
    #: SQLite's write lock as needed), ``serve`` (this one, also committing for other
    #: processes over ``<data dir>/writer.sock``), ``connect`` (the coordinator that serves
    #: it: no write lock is ever contended). docs/scaling.md.
    writer: str = attrs.field(default="own", validator=_writer_mode)
    #: Executions submit() lets wait for a worker; beyond it a new one is refused at once
    #: (``quota_exceeded``, recorded like any refusal) instead of growing the queue unbounded.
    max_queued: int = attrs.field(default=10_000, validator=positive)
    #: Finished executions whose outcome status() reads from memory; older ones come from the
    #: durable log.
    ledger_retention: int = attrs.field(default=10_000, validator=positive)
    #: Fee limit of a query (``Coordinator.query``, ``coordinator query``): a request's own
    #: fee limit may lower it, never raise it (CosmWasm's ``query_gas_limit``).
    query_fee_limit: int = attrs.field(default=3_000_000, validator=positive)
    #: Fraction of queries (0 to 1) written to the audit log as ``query`` records, every
    #: 1/fraction-th one; 0 (the default) writes none, so a query never waits for a commit.
    query_audit_sample: float = attrs.field(default=0.0, validator=_fraction)
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
    #: Plugins (entry-point or built-in names, or distribution names) without which the
    #: coordinator refuses to open: a validator that failed to import must not leave the
    #: coordinator running without its check.
    required_plugins: tuple[str, ...] = ()


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
    converter.register_structure_hook(ProcessCount, ProcessCount.parse)
    converter.register_unstructure_hook(ProcessCount, int)
    converter.register_structure_hook_func(
        lambda t: getattr(t, "__origin__", None) is frozenset,
        lambda v, _t: frozenset(_strings(v)),
    )
    # A string where a list of names belongs ("storage", or "a,b" from the environment) is
    # a list of names, never the tuple of its characters.
    converter.register_structure_hook_func(
        lambda t: t == tuple[str, ...], lambda v, _t: tuple(_strings(v))
    )
    # Any frozenset field, whatever its element type: sorted, so it prints as JSON and TOML.
    converter.register_unstructure_hook_func(
        lambda t: t is frozenset or getattr(t, "__origin__", None) is frozenset, sorted
    )
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
    #: Plugin sections by canonical name (``-`` written as ``_``), see :func:`section_key`.
    raw_sections: dict[str, dict[str, Any]]
    source: Path | None = None
    #: Where each raw section was written, for warnings: ``[name]`` or an environment
    #: variable name, by canonical name.
    origins: dict[str, str] = attrs.field(factory=dict)
    _sections: dict[str, Any] = attrs.field(factory=dict)

    def bind_sections(self, section_types: Mapping[str, type]) -> list[str]:
        """Structure every declared plugin section; return undeclared section names."""
        for name, cls in section_types.items():
            raw = self.raw_sections.get(section_key(name), {})
            self._sections[name] = structure(raw, cls, f"[{name}]")
        declared = {section_key(name) for name in section_types}
        return sorted(set(self.raw_sections) - declared)

    def warn_unknown(self, unknown: list[str], section_types: Mapping[str, type]) -> None:
        """One warning per section no plugin declared, with the closest declared name."""
        by_key = {section_key(name): name for name in section_types}
        for key in unknown:
            where = self.origins.get(key, f"[{key}]")
            close = difflib.get_close_matches(key, list(by_key), n=1)
            hint = f"; did you mean [{by_key[close[0]]}]?" if close else ""
            logger.warning(
                "config section {} is not declared by any loaded plugin; ignored{}", where, hint
            )

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
    data, source, origins = read_sources(path, environ, overrides)
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
    return Config(
        core=core,
        data_dir=resolved,
        records=records,
        raw_sections=data,
        source=source,
        origins=origins,
    )
