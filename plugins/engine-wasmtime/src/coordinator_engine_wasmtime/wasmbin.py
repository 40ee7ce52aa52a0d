"""A small reader of the WebAssembly binary's module-level sections.

Why our own: the static limits (functions, params, locals, imports, tables, memory) must be
checked *before* wasmtime spends time on a module (a 20,000-function compile bomb has to be
refused in microseconds), and a malformed, empty or truncated module must be refused with a
message saying what is wrong. The reader only walks section headers, the type, import,
function, table, memory, export and start sections and the local declarations of each body;
full validation stays wasmtime's job (``_capi.validate``).
"""

from __future__ import annotations

import functools

import attrs

from coordinator_hookspecs import InvalidRequest

MAGIC = b"\0asm"
VERSION = b"\x01\0\0\0"
VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128",
            0x70: "funcref", 0x6F: "externref"}
KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@attrs.frozen
class Import:
    module: str
    name: str
    kind: str
    type_index: int = -1  # functions only


@attrs.frozen
class Export:
    name: str
    kind: str
    index: int


@attrs.frozen(cache_hash=False, slots=False)
class ModuleShape:
    """What the reader learned: enough for limits, capabilities and entry signatures."""

    types: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    imports: tuple[Import, ...]
    functions: tuple[int, ...]  # type index of each defined function
    tables: tuple[int, ...]  # initial size of each defined table
    memories: tuple[tuple[int, bool, bool], ...]  # (initial pages, shared, 64-bit)
    exports: tuple[Export, ...]
    max_locals: int
    has_start: bool

    @functools.cached_property
    def _func_type_indices(self) -> tuple[int, ...]:
        """Type index of every function in the index space (imports first), built once:
        a per-call rebuild made ``inspect`` quadratic in imports x exports."""
        return (*(i.type_index for i in self.imports if i.kind == "func"), *self.functions)

    def func_type(self, index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Signature of function ``index`` in the function index space (imports first)."""
        return self.types[self._func_type_indices[index]]


class _Reader:
    __slots__ = ("data", "end", "pos", "where")

    def __init__(self, data: bytes, pos: int, end: int, where: str) -> None:
        self.data, self.pos, self.end, self.where = data, pos, end, where

    def fail(self, what: str) -> InvalidRequest:
        return InvalidRequest(f"malformed wasm module: {what} in {self.where} at byte {self.pos}")

    def byte(self) -> int:
        if self.pos >= self.end:
            raise self.fail("unexpected end (truncated)")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uleb(self, bits: int = 32) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= bits + 7:
                raise self.fail("integer too long")
        if result >= 1 << bits:
            raise self.fail("integer out of range")
        return result

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise self.fail(f"{n} bytes announced, {self.end - self.pos} left (truncated)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def name(self) -> str:
        raw = self.take(self.uleb())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("name is not UTF-8") from None

    def valtype(self) -> str:
        code = self.byte()
        if code not in VALTYPES:
            raise self.fail(f"unsupported value type 0x{code:02x}")
        return VALTYPES[code]

    def limits(self) -> tuple[int, bool, bool]:
        flags = self.byte()
        if flags > 0x07:
            raise self.fail(f"bad limits flags 0x{flags:02x}")
        is64 = bool(flags & 0x04)
        initial = self.uleb(64 if is64 else 32)
        if flags & 0x01:
            self.uleb(64 if is64 else 32)
        return initial, bool(flags & 0x02), is64

    def vector(self) -> int:
        count = self.uleb()
        if count > self.end - self.pos:  # every entry takes at least one byte
            raise self.fail(f"{count} entries announced, {self.end - self.pos} bytes left")
        return count


def read_module(data: bytes) -> ModuleShape:
    """Read ``data``'s module-level structure; ``InvalidRequest`` naming what is wrong."""
    if not data:
        raise InvalidRequest("malformed wasm module: empty (0 bytes)")
    if len(data) < 8 or data[:4] != MAGIC:
        raise InvalidRequest("malformed wasm module: missing the \\0asm magic header")
    if data[4:8] != VERSION:
        raise InvalidRequest(f"malformed wasm module: unsupported version {data[4:8].hex()} "
                             "(components and other layers are not contracts)")
    out: dict[str, list] = {k: [] for k in ("types", "imports", "functions", "tables",
                                            "memories", "exports")}
    max_locals, has_start = 0, False
    top = _Reader(data, 8, len(data), "module header")
    while top.pos < top.end:
        section_id = top.byte()
        size = top.uleb()
        if size > top.end - top.pos:
            raise top.fail(f"section {section_id} announces {size} bytes, "
                           f"{top.end - top.pos} left (truncated)")
        r = _Reader(data, top.pos, top.pos + size, f"section {section_id}")
        top.pos += size
        if section_id == 1:
            for _ in range(r.vector()):
                form = r.byte()
                if form != 0x60:
                    raise r.fail(f"type form 0x{form:02x} is not a function type")
                params = tuple(r.valtype() for _ in range(r.vector()))
                results = tuple(r.valtype() for _ in range(r.vector()))
                out["types"].append((params, results))
        elif section_id == 2:
            for _ in range(r.vector()):
                module, name, kind = r.name(), r.name(), r.byte()
                if kind not in KINDS:
                    raise r.fail(f"unknown import kind 0x{kind:02x}")
                type_index = -1
                if kind == 0:
                    type_index = r.uleb()
                elif kind == 1:
                    r.valtype()
                    r.limits()
                elif kind == 2:
                    r.limits()
                elif kind == 3:
                    r.valtype()
                    r.byte()
                else:
                    r.byte()
                    r.uleb()
                out["imports"].append(Import(module, name, KINDS[kind], type_index))
        elif section_id == 3:
            out["functions"] = [r.uleb() for _ in range(r.vector())]
        elif section_id == 4:
            for _ in range(r.vector()):
                r.valtype()
                out["tables"].append(r.limits()[0])
        elif section_id == 5:
            out["memories"] = [r.limits() for _ in range(r.vector())]
        elif section_id == 7:
            for _ in range(r.vector()):
                name, kind = r.name(), r.byte()
                out["exports"].append(Export(name, KINDS.get(kind, f"0x{kind:02x}"), r.uleb()))
        elif section_id == 8:
            has_start = True
        elif section_id == 10:
            max_locals = _max_locals(r)
        elif section_id > 13:  # 0 custom, 6 global, 9 elem, 11 data, 12 datacount, 13 tag
            raise r.fail(f"unknown section id {section_id}")
    for index in out["functions"]:
        if index >= len(out["types"]):
            raise InvalidRequest(f"malformed wasm module: function uses type {index}, "
                                 f"only {len(out['types'])} types exist")
    for imp in out["imports"]:
        if imp.kind == "func" and imp.type_index >= len(out["types"]):
            raise InvalidRequest(f"malformed wasm module: import {imp.module}.{imp.name} uses "
                                 f"type {imp.type_index}, only {len(out['types'])} types exist")
    return ModuleShape(tuple(out["types"]), tuple(out["imports"]), tuple(out["functions"]),
                       tuple(out["tables"]), tuple(out["memories"]), tuple(out["exports"]),
                       max_locals, has_start)


def _max_locals(r: _Reader) -> int:
    """The largest number of locals any function body declares."""
    most = 0
    for _ in range(r.vector()):
        size = r.uleb()
        end = r.pos + size
        if end > r.end:
            raise r.fail("function body runs past its section (truncated)")
        body = _Reader(r.data, r.pos, end, r.where)
        total = 0
        for _ in range(body.vector()):
            total += body.uleb()
            body.valtype()
        most = max(most, total)
        r.pos = end
    return most
