"""Deploy-time rules for modules: static limits, import rules, and the metadata we keep.

Shared by ``inspect`` (metadata), the deploy validator (refusals) and the compile path (which
re-checks before compiling, so a module stored while the validator was switched off still
cannot make the engine compile something unbounded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_hookspecs import EngineError, HostFunctionRecord, InvalidRequest, SecurityRejected

if TYPE_CHECKING:  # the plugin imports this module when it loads; shapes come with a deploy
    from coordinator_engine_wasmtime.wasmbin import ModuleShape

SOURCE = "wasmtime-deploy"
#: Always granted: a contract without input and output cannot do anything useful.
ALWAYS_GRANTED = frozenset({"io"})
HOST_MODULE = "env"


def env_host_functions(records: Iterable[HostFunctionRecord]) -> list[HostFunctionRecord]:
    """The records of module ``env``, the one guests import from; a name defined twice is an
    ``EngineError`` (checked when records are bound, before any module is linked)."""
    chosen = [r for r in records if r.module == HOST_MODULE]
    names = [r.name for r in chosen]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EngineError(f"host functions defined twice: {', '.join(duplicates)}")
    return chosen


def _sig(params: Iterable[str], results: Iterable[str]) -> str:
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def check_limits(shape: ModuleShape, size: int, s: WasmtimeSettings) -> None:
    """Refuse a module that exceeds any static limit (``SecurityRejected`` naming it)."""

    def refuse(what: str, value: int, limit: int, key: str) -> SecurityRejected:
        return SecurityRejected(f"module refused: {what} is {value}, the limit is {limit} "
                                f"(wasmtime.{key})", source=SOURCE)

    checks = [
        ("module size in bytes", size, s.max_module_bytes, "max_module_bytes"),
        ("number of defined functions", len(shape.functions), s.max_functions, "max_functions"),
        ("number of imports", len(shape.imports), s.max_imports, "max_imports"),
        ("number of exports", len(shape.exports), s.max_exports, "max_exports"),
        ("number of tables", len(shape.tables), s.max_tables, "max_tables"),
        ("locals of one function", shape.max_locals, s.max_function_locals,
         "max_function_locals"),
    ]
    for what, value, limit, key in checks:
        if value > limit:
            raise refuse(what, value, limit, key)
    for params, results in shape.types:
        if len(params) > s.max_function_params:
            raise refuse("params of a function type", len(params), s.max_function_params,
                         "max_function_params")
        if len(results) > s.max_function_results:
            raise refuse("results of a function type", len(results), s.max_function_results,
                         "max_function_results")
    for initial in shape.tables:
        if initial > s.max_table_elements:
            raise refuse("initial table size", initial, s.max_table_elements,
                         "max_table_elements")
    if len(shape.memories) > 1:
        raise refuse("number of memories", len(shape.memories), 1, "multi-memory is off")
    for pages, shared, is64 in shape.memories:
        if shared or is64:
            raise SecurityRejected("module refused: shared and 64-bit memories are not "
                                   "allowed (non-deterministic or unbounded)", source=SOURCE)
        if pages > s.max_initial_memory_pages:
            raise refuse("initial memory in 64 KiB pages", pages, s.max_initial_memory_pages,
                         "max_initial_memory_pages")


def required_capabilities(shape: ModuleShape,
                          hosts: Mapping[str, HostFunctionRecord]) -> frozenset[str]:
    """Capabilities of the known host functions the module imports (unknown ones ignored)."""
    return frozenset(hosts[i.name].capability for i in shape.imports
                     if i.module == HOST_MODULE and i.kind == "func" and i.name in hosts)


def check_imports(shape: ModuleShape, hosts: Mapping[str, HostFunctionRecord],
                  granted: Iterable[str]) -> None:
    """Imports must be known host functions of module ``env`` with the right signature whose
    capability is granted; importing one with an i32 param (a pointer or length) needs an
    exported ``memory``."""
    allowed = ALWAYS_GRANTED | frozenset(granted)
    needs_memory = False
    for imp in shape.imports:
        where = f"import {imp.module}.{imp.name}"
        if imp.kind != "func" or imp.module != HOST_MODULE:
            raise SecurityRejected(f"{where} is a {imp.kind} import; contracts may import only "
                                   f"functions from module '{HOST_MODULE}'", source=SOURCE)
        record = hosts.get(imp.name)
        if record is None:
            raise SecurityRejected(f"{where} is not a host function (known: "
                                   f"{', '.join(sorted(hosts))})", source=SOURCE)
        params, results = shape.types[imp.type_index]
        if (params, results) != (record.params, record.results):
            raise InvalidRequest(f"{where} has type {_sig(params, results)}, but the host "
                                 f"function is {_sig(record.params, record.results)}",
                                 source=SOURCE)
        if record.capability not in allowed:
            raise SecurityRejected(
                f"{where} needs capability '{record.capability}', which the resource was not "
                f"granted (granted: {', '.join(sorted(allowed))})", source=SOURCE)
        # In this ABI an i32 param of a host function is a pointer or a length.
        needs_memory = needs_memory or "i32" in params
    if needs_memory and not any(e.name == "memory" and e.kind == "memory"
                                for e in shape.exports):
        raise InvalidRequest("the module imports host functions that take pointers but does "
                             "not export its memory as 'memory'", source=SOURCE)


def describe(shape: ModuleShape, hosts: Mapping[str, HostFunctionRecord]) -> dict[str, Any]:
    """JSON-compatible metadata kept with the resource (``ResourceInfo.meta``)."""
    exports: list[dict[str, Any]] = []
    for exp in shape.exports:
        item: dict[str, Any] = {"name": exp.name, "kind": exp.kind}
        if exp.kind == "func":
            params, results = shape.func_type(exp.index)
            item.update(params=list(params), results=list(results))
        exports.append(item)
    imports = []
    for imp in shape.imports:
        item = {"module": imp.module, "name": imp.name, "kind": imp.kind}
        if imp.kind == "func":
            params, results = shape.types[imp.type_index]
            item.update(params=list(params), results=list(results))
        imports.append(item)
    return {
        "imports": imports,
        "exports": exports,
        "required_capabilities": sorted(required_capabilities(shape, hosts)),
        "functions": len(shape.functions),
        "memory_pages": shape.memories[0][0] if shape.memories else 0,
        "has_start": shape.has_start,
    }


def entries_from_meta(meta: Mapping[str, Any] | None
                      ) -> tuple[dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
                                 frozenset[str], bool] | None:
    """(entry signatures, required capabilities, has a start function) from ``describe``'s
    metadata, without re-parsing the code; None when the metadata lacks them."""
    try:
        exports = (meta or {})["exports"]
        entries = {e["name"]: (tuple(e["params"]), tuple(e["results"]))
                   for e in exports if e["kind"] == "func"}
        return (entries, frozenset((meta or {})["required_capabilities"]),
                bool((meta or {})["has_start"]))
    except (KeyError, TypeError):
        return None
