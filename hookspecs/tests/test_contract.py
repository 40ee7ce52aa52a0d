"""The contract's shape: field order of the records and values that cross distributions,
and the base classes that carry every optional method with its default."""

from __future__ import annotations

import inspect
from typing import Any

import attrs
import pytest

import coordinator_hookspecs as h
from coordinator_hookspecs import bases, protocols

#: Field order of every attrs class a plugin and the core both build. The core builds some
#: of them positionally where it matters for speed (``AuditRecord`` on every commit), so a
#: reordered or inserted field must be a deliberate change of this table, not an accident
#: that silently swaps two values.
FIELDS: dict[type, tuple[str, ...]] = {
    h.EngineRecord: ("name", "engine", "resource_types", "features", "concurrency", "order"),
    h.ValidatorRecord: ("name", "validator", "priority", "weight", "applies_to", "cacheable"),
    h.QuotaPolicyRecord: ("name", "policy", "order", "applies_to"),
    h.MetricsSinkRecord: ("name", "sink", "order"),
    h.AuditSinkRecord: ("name", "sink", "order"),
    h.EffectProcessorRecord: ("name", "processor", "kinds", "order"),
    h.HostFunctionRecord: ("name", "capability", "func", "params", "results", "fee", "module"),
    h.ConfigSection: ("name", "type"),
    h.ExecutorRecord: ("name", "install", "describe", "description"),
    h.CliCommand: ("name", "help", "add_arguments", "run"),
    h.Effect: ("kind", "resource_id", "key", "value"),
    h.AccessPolicy: ("public", "allow", "deny"),
    h.ResourceInfo: ("id", "type", "name", "owner", "capabilities", "policy", "size",
                     "deployed_at", "meta"),
    h.DeployRequest: ("code", "resource_type", "resource_id", "name", "owner", "capabilities",
                      "policy", "meta", "options"),
    h.ExecutionRequest: ("resource_id", "caller", "entry", "input", "args", "fee_limit",
                         "timeout", "parent_id", "depth", "parent_resource_id"),
    h.Verdict: ("allow", "reason", "score"),
    h.ErrorInfo: ("kind", "message", "source"),
    h.ExecutionResult: ("execution_id", "status", "resource_id", "caller", "output", "fee_used",
                        "effects", "error", "engine", "duration", "parent_id", "cpu_seconds",
                        "memory_bytes", "usage"),
    h.SimulationResult: ("execution_id", "status", "resource_id", "caller", "output",
                         "fee_used", "effects", "error", "engine", "duration", "parent_id",
                         "cpu_seconds", "memory_bytes", "usage",
                         "events", "state_root", "global_root"),
    h.EngineResult: ("output", "fee_used", "effects", "memory_bytes", "usage", "cpu_seconds"),
    h.ExecutionReport: ("result", "resource_type", "stages"),
    h.AuditRecord: ("seq", "record_kind", "timestamp", "execution_id", "parent_id", "caller",
                    "resource_id", "status", "error_kind", "message", "fee_used", "duration",
                    "effect_digest", "detail", "leaf_hash", "chain_hash"),
    h.ExecutionContext: ("execution_id", "request", "resource", "fee_limit", "token",
                         "state_get", "load_code", "invoke", "read_only"),
}


@pytest.mark.parametrize("cls", list(FIELDS), ids=lambda c: c.__name__)
def test_field_order_is_pinned(cls: type) -> None:
    assert tuple(f.name for f in attrs.fields(cls)) == FIELDS[cls]


def test_every_exported_attrs_class_is_pinned() -> None:
    exported = [getattr(h, n) for n in h.__all__]
    assert {c for c in exported if isinstance(c, type) and attrs.has(c)} == set(FIELDS)


#: Protocol -> its base class (the one defining every optional method).
BASES = {
    protocols.Engine: bases.EngineBase,
    protocols.SecurityValidator: bases.ValidatorBase,
    protocols.QuotaPolicy: bases.QuotaPolicyBase,
    protocols.MetricsSink: bases.MetricsSinkBase,
    protocols.AuditSink: bases.AuditSinkBase,
    protocols.EffectProcessor: bases.EffectProcessorBase,
}


def _methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}


@pytest.mark.parametrize("protocol", list(BASES), ids=lambda c: c.__name__)
def test_protocol_docstring_names_every_optional_method_of_its_base(protocol: type) -> None:
    base = BASES[protocol]
    doc = inspect.getdoc(protocol) or ""
    assert base.__name__ in doc
    optional = _methods(base) - _methods(protocol)
    missing = sorted(m for m in optional if f"``{m}(" not in doc)
    assert not missing, f"{protocol.__name__}'s docstring does not list {missing}"


def test_a_subclass_satisfies_its_protocol() -> None:
    class Engine(h.EngineBase):
        def execute(self, ctx: Any) -> h.EngineResult:
            return h.EngineResult()

    assert isinstance(Engine(), h.Engine)
    assert isinstance(h.EffectProcessorBase(), h.EffectProcessor)


class Plain:
    """Implements ``health`` itself and nothing else optional; inherits no base class."""

    def health(self) -> bool:
        return False


class Inherits(h.EngineBase):
    def holds(self, resource_id: str) -> bool:
        return resource_id == "warm"


def test_optional_is_none_for_a_missing_or_only_inherited_method() -> None:
    assert h.optional(Plain(), "holds", h.EngineBase) is None
    assert h.optional(Inherits(), "health", h.EngineBase) is None
    health = h.optional(Plain(), "health", h.EngineBase)
    holds = h.optional(Inherits(), "holds", h.EngineBase)
    assert health is not None and health() is False
    assert holds is not None and holds("warm") and not holds("cold")
    patched = Inherits()
    patched.health = lambda: False  # type: ignore[method-assign]
    assert h.optional(patched, "health", h.EngineBase) is patched.health


def test_method_or_default_binds_the_base_default_to_any_object() -> None:
    plain = Plain()
    decode = h.method_or_default(plain, "decode_cli_input", h.EngineBase)
    assert decode("hé", None) == "hé".encode() and decode(b"\x00", "f.bin") == b"\x00"
    assert h.method_or_default(plain, "canonical_code", h.EngineBase)(b"x", "binary") == b"x"
    assert h.method_or_default(plain, "close", h.EngineBase)() is None
    assert h.method_or_default(plain, "health", h.EngineBase)() is False  # its own wins
