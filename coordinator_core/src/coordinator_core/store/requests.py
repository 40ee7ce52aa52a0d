"""Kept requests: every top-level execution's request, content-addressed beside its record.

With ``[store] keep_requests = true`` (the default) the final audit record of a top-level
execution carries ``detail["request"]``, the sha256 of the request's canonical body, and
``detail["output"]``, the digest of its output; the body itself goes into the ``requests``
table under that digest, written by the same store statement group as the record. Both keys
are inside the sealed leaf, so the chain covers the request and the output that
``coordinator replay`` compares (docs/replay.md).

The body travels with the record as a :class:`RequestRef`: a ``str`` (the digest, which is
what the record's canonical JSON holds) carrying the body bytes, so it reaches the writer of
worker processes inside the pickled record without a second message.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sqlite3
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from typing import Any

from coordinator_hookspecs import AuditRecord, ExecutionRequest, InvalidRequest

#: Version of the body layout (``"v"`` in each body).
BODY_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    digest       TEXT PRIMARY KEY,          -- sha256 hex of body
    body         BLOB NOT NULL              -- canonical JSON of the request (requests.py)
) WITHOUT ROWID;
"""
_INSERT = "INSERT OR IGNORE INTO requests (digest, body) VALUES "


class RequestRef(str):
    """The digest of a kept request (what the audit record stores) with its ``body``."""

    body: bytes

    def __new__(cls, body: bytes) -> RequestRef:
        ref = super().__new__(cls, hashlib.sha256(body).hexdigest())
        ref.body = body
        return ref

    def __reduce__(self) -> Any:  # pickled into a worker's message: the body goes along
        return (RequestRef, (self.body,))


# -- canonical values ------------------------------------------------------------------------
def encode_value(value: Any) -> Any:
    """``value`` (an input, args or output) as tagged JSON data that decodes back exactly:
    bytes ``{"b": hex}``, text ``{"s": ...}``, arrays ``{"nd": dtype, "shape", "data": hex}``,
    mappings ``{"map": [[key, value], ...]}`` sorted by key, sequences ``{"list": [...]}``;
    numbers, booleans and None as themselves. Anything else is kept as ``{"repr": ...}``,
    which a replay cannot rebuild (it is then fed the text)."""
    if value is None or type(value) in (bool, int, float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": bytes(value).hex()}
    if isinstance(value, str):
        return {"s": value}
    if hasattr(value, "dtype") and hasattr(value, "tobytes") and hasattr(value, "shape"):
        dtype = value.dtype
        if getattr(dtype, "hasobject", False):
            return {"list": [encode_value(v) for v in value.tolist()]}
        return {"nd": dtype.str, "shape": list(value.shape), "data": value.tobytes().hex()}
    if isinstance(value, Mapping):
        items = sorted(((str(k), encode_value(v)) for k, v in value.items()), key=lambda i: i[0])
        return {"map": [list(item) for item in items]}
    if isinstance(value, list | tuple):
        return {"list": [encode_value(v) for v in value]}
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return encode_value(value.item())
    return {"repr": repr(value)}


def decode_value(data: Any) -> Any:
    """The inverse of :func:`encode_value` (arrays come back as numpy arrays)."""
    if not isinstance(data, dict):
        return data
    if "b" in data:
        return bytes.fromhex(data["b"])
    if "s" in data:
        return data["s"]
    if "repr" in data:
        return data["repr"]
    if "nd" in data:
        import numpy as np  # only requests that held arrays need it

        array = np.frombuffer(bytes.fromhex(data["data"]), dtype=np.dtype(data["nd"]))
        return array.reshape(data["shape"]).copy()
    if "map" in data:
        return {key: decode_value(value) for key, value in data["map"]}
    if "list" in data:
        return [decode_value(v) for v in data["list"]]
    raise InvalidRequest(f"a kept request holds a value of unknown shape: {sorted(data)}")


#: Built once: ``json.dumps`` with options builds a new encoder on every call, and a body is
#: encoded on every top-level execution's commit.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def _canonical(data: Any) -> bytes:
    return _encode(data).encode()


def output_digest(output: Any) -> str | None:
    """The digest of an execution's output kept in its record: sha256 of the bytes for bytes,
    of the canonical JSON of :func:`encode_value` otherwise; None for no output."""
    if output is None:
        return None
    if type(output) is bytes:
        return hashlib.sha256(output).hexdigest()
    return hashlib.sha256(_canonical(encode_value(output))).hexdigest()


# -- request bodies ----------------------------------------------------------------------------
def request_ref(request: ExecutionRequest, engine: str | None, engine_object: Any) -> RequestRef:
    """The kept form of a top-level ``request`` run by ``engine`` (None: refused before an
    engine was chosen); the body names the versions it ran with (:func:`versions`)."""
    caller = request.caller
    args = request.args
    value = request.input
    body = {  # the keys in sorted order already
        "args": None if args is None else encode_value(args),
        "caller": caller if isinstance(caller, str) else repr(caller),
        "engine": engine,
        "entry": request.entry,
        "fee_limit": request.fee_limit,
        "input": {"b": value.hex()} if type(value) is bytes else encode_value(value),
        "resource_id": request.resource_id,
        "timeout": request.timeout,
        "v": BODY_VERSION,
    }
    text = _encode(body)
    # ``versions`` is spliced in as text encoded once per engine: same bytes as encoding the
    # whole body with sorted keys ("versions" sorts last), at a fraction of the cost.
    module = type(engine_object).__module__ if engine_object is not None else None
    return RequestRef((text[:-1] + ',"versions":' + _versions_text(module) + "}").encode())


def request_of(body: bytes) -> tuple[ExecutionRequest, dict[str, Any]]:
    """The ``ExecutionRequest`` a kept body describes, and the body as data (engine,
    versions). ``InvalidRequest`` when the body is not one this version understands."""
    try:
        data = json.loads(body)
        if data.get("v") != BODY_VERSION:
            raise InvalidRequest(f"kept request of layout {data.get('v')!r}; this coordinator "
                                 f"reads layout {BODY_VERSION}")
        args = data.get("args")
        request = ExecutionRequest(
            resource_id=data["resource_id"], caller=data["caller"], entry=data["entry"],
            input=decode_value(data["input"]),
            args=None if args is None else tuple(decode_value(args)),
            fee_limit=data["fee_limit"], timeout=data["timeout"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidRequest(f"kept request is malformed: {type(exc).__name__}: {exc}") from None
    return request, data


@lru_cache(maxsize=64)
def _versions_text(module: str | None) -> str:
    return _encode(versions(module))


@lru_cache(maxsize=64)
def versions(module: str | None) -> dict[str, str]:
    """Python, ``coordinator-core`` and the plugin distribution providing ``module`` (the
    engine's; found through its ``coordinator`` entry point), each with its version: what a
    replay on another machine should match."""
    found = {"python": platform.python_version()}
    try:
        found["coordinator-core"] = metadata.version("coordinator-core")
    except metadata.PackageNotFoundError:
        pass
    package = module.split(".")[0] if module else None
    if package and package != "coordinator_core":
        for ep in metadata.entry_points(group="coordinator"):
            if ep.value.split(".")[0].split(":")[0] == package and ep.dist is not None:
                found[ep.dist.name] = ep.dist.version
                break
    return found


# -- the table ---------------------------------------------------------------------------------
def refs_of(records: Iterable[AuditRecord]) -> list[RequestRef]:
    """The request bodies carried by ``records`` (none unless ``keep_requests`` is on)."""
    refs = []
    for record in records:
        detail = record.detail
        if detail:
            ref = detail.get("request")
            if type(ref) is RequestRef:
                refs.append(ref)
    return refs


def keep(cursor: sqlite3.Cursor, refs: list[RequestRef]) -> None:
    """Write the bodies of ``refs`` (one statement; a body kept already is left alone)."""
    if not refs:
        return
    params: list[Any] = []
    for ref in refs:
        params += (str(ref), ref.body)
    cursor.execute(_INSERT + ", ".join(["(?, ?)"] * len(refs)), params)


def load(conn: sqlite3.Connection, digest: str) -> bytes | None:
    """The body kept under ``digest``, None if there is none."""
    rows = conn.execute("SELECT body FROM requests WHERE digest = ?", (digest,)).fetchall()
    return bytes(rows[0][0]) if rows else None
