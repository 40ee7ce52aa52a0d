"""Every hookspec is documented (docs/hooks.md) and its docstring example really works."""

from __future__ import annotations

import collections
import inspect
import re
import runpy
import threading
import time
import types
from pathlib import Path
from typing import Any

import attrs
import pluggy
import pytest

import coordinator_hookspecs
from coordinator_hookspecs import PROJECT_NAME, spec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
HOOKS = sorted(
    n for n, f in inspect.getmembers(spec, inspect.isfunction) if n.startswith("coordinator_")
)
RECORD_OF_HOOK = {
    "coordinator_register_config_sections": coordinator_hookspecs.ConfigSection,
    "coordinator_register_engines": coordinator_hookspecs.EngineRecord,
    "coordinator_register_validators": coordinator_hookspecs.ValidatorRecord,
    "coordinator_register_quota_policies": coordinator_hookspecs.QuotaPolicyRecord,
    "coordinator_register_metrics_sinks": coordinator_hookspecs.MetricsSinkRecord,
    "coordinator_register_audit_sinks": coordinator_hookspecs.AuditSinkRecord,
    "coordinator_register_effect_processors": coordinator_hookspecs.EffectProcessorRecord,
    "coordinator_register_host_functions": coordinator_hookspecs.HostFunctionRecord,
    "coordinator_register_cli_commands": coordinator_hookspecs.CliCommand,
    "coordinator_register_executors": coordinator_hookspecs.ExecutorRecord,
}


def test_there_are_hooks() -> None:
    assert len(HOOKS) == 13


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_docs(hook: str) -> None:
    headings = re.findall(r"^## (\w+)$", DOCS.read_text(), flags=re.MULTILINE)
    assert hook in headings, f"{hook} lacks a '## {hook}' section in docs/hooks.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_documented_signature_matches_the_hookspec(hook: str) -> None:
    section = DOCS.read_text().split(f"\n## {hook}\n", 1)[1].split("\n## ", 1)[0]
    documented = re.search(rf"^def {hook}\((.*)\)(?: -> (.+))?$", section, flags=re.MULTILINE)
    assert documented, f"docs/hooks.md shows no signature for {hook}"
    function = getattr(spec, hook)
    expected = _parameters(inspect.signature(function))
    assert documented.group(1) == expected, f"docs/hooks.md shows {hook}({documented.group(1)})"
    returns = inspect.signature(function).return_annotation
    assert documented.group(2) == _annotation(returns)
    assert (inspect.getdoc(function) or "").splitlines()[0].replace("``", "`") in section


def test_hooks_doc_is_generated_from_the_current_spec() -> None:
    script = DOCS.parents[1] / "scripts" / "gen_hooks_doc.py"
    generator = runpy.run_path(str(script))
    text = generator["render"](generator["SPEC"].read_text(), generator["RECORDS"].read_text())
    assert text == DOCS.read_text(), "docs/hooks.md is stale: run scripts/gen_hooks_doc.py"
    for record in set(RECORD_OF_HOOK.values()):
        assert f"\n### {record.__name__}\n" in text
        for field in attrs.fields(record):
            assert f"| `{field.name}` |" in text, f"{record.__name__}.{field.name} undocumented"


def _parameters(signature: inspect.Signature) -> str:
    """The parameter list as Python source writes it (``*`` before keyword-only ones; pluggy
    passes hook arguments by name, so there are no positional-only ones)."""
    parts: list[str] = []
    kinds = inspect.Parameter
    for p in signature.parameters.values():
        if p.kind is kinds.KEYWORD_ONLY and not any(x.startswith("*") for x in parts):
            parts.append("*")
        text = {kinds.VAR_POSITIONAL: "*", kinds.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:  # as ast.unparse writes it; pluggy ignores such params
            text += f"={p.default!r}"
        parts.append(text)
    return ", ".join(parts)


def _annotation(annotation: Any) -> str:
    # spec.py uses postponed annotations, so they are the source text already.
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_docstring_has_runnable_example(hook: str) -> None:
    doc = inspect.getdoc(getattr(spec, hook)) or ""
    assert "Example::" in doc, f"{hook} has no example"
    example = _example(doc)
    namespace: dict[str, Any] = {
        name: getattr(coordinator_hookspecs, name) for name in coordinator_hookspecs.__all__
    }
    namespace.update(
        attrs=attrs,
        threading=threading,
        time=time,
        collections=collections,
        logger=_Logger(),
        my_connection=_Closable(),
    )
    exec(compile(example, f"<{hook} example>", "exec"), namespace)
    plugin = types.SimpleNamespace(**{k: v for k, v in namespace.items() if k.startswith("coord")})
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(spec)
    manager.register(plugin)
    manager.check_pending()
    caller = getattr(manager.hook, hook)
    kwargs = {name: _argument(name) for name in caller.spec.argnames}
    results = caller(**kwargs)
    if hook in RECORD_OF_HOOK:
        records = [r for batch in results for r in batch]
        assert records and all(isinstance(r, RECORD_OF_HOOK[hook]) for r in records)


def _example(doc: str) -> str:
    block = doc.split("Example::", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines)


def _argument(name: str) -> Any:
    if name == "config":
        return types.SimpleNamespace(data_dir=Path("/tmp"), section=lambda n: None)
    return types.SimpleNamespace(metrics=dict)


class _Logger:
    def info(self, *args: Any) -> None:
        self.last = args


class _Closable:
    def close(self) -> None:
        self.closed = True
