"""Snapshots: a data directory's resources, state and chain head in one file, and back.

``export_snapshot`` writes JSON Lines (docs/storage.md, "Snapshots"): a header with the
format, the global root and the source's chain head (``seq``, ``head``), then one line per
resource with its metadata row, its bytes (base64), its state root and its state (hex pairs).
``import_snapshot`` reads and checks everything before writing anything: every resource's
bytes hash to its id, every state rebuilds to its recorded root, the roots rebuild to the
global root (and to ``expect_root`` when the caller has a trusted one), and the target store
is empty. A snapshot that fails any check is refused with ``invalid_request`` naming what was
wrong; then the store restores it in one transaction, ending with a ``snapshot`` audit record
that names the source's chain head and the global root.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from coordinator_core.store.files import check_new_resource
from coordinator_core.store.merkle import Node, build, key_hash
from coordinator_core.store.schema import resource_of, resource_row
from coordinator_hookspecs import (
    AuditRecord,
    CoordinatorError,
    InternalError,
    InvalidRequest,
    NotFound,
    ResourceInfo,
)
from coordinator_hookspecs.proofs import EMPTY

FORMAT = "coordinator-snapshot/1"


@attrs.frozen
class Restored:
    """One resource of a verified snapshot: what a store writes for it."""

    info: ResourceInfo
    code: bytes
    state: list[tuple[bytes, bytes]]
    nodes: dict[str, Node]


@attrs.frozen
class Snapshot:
    """A snapshot that passed every check, ready for ``Store.restore``."""

    resources: list[Restored]
    global_nodes: dict[str, Node]
    global_root: str
    source_seq: int
    source_head: str

    def record(self) -> AuditRecord:
        """The ``snapshot`` audit record the import leaves."""
        keys = sum(len(r.state) for r in self.resources)
        return AuditRecord(
            seq=0, record_kind="snapshot", timestamp=time.time(), status="succeeded",
            detail={"action": "import", "global_root": self.global_root,
                    "source_seq": self.source_seq, "source_head": self.source_head,
                    "resources": len(self.resources), "keys": keys})


def export_snapshot(store: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``store``'s resources, state, roots and chain head to ``path`` (through a
    temporary file, renamed into place); returns the header. All of it is read from one
    committed state, and a log that fails ``verify`` is not exported."""
    target = Path(path)
    reading = getattr(store, "read_snapshot", None)
    with reading() if reading is not None else contextlib.nullcontext():
        report = store.verify()
        if not report.ok:
            raise InvalidRequest(f"the audit log does not verify ({report.reason}); "
                                 "refusing to export a snapshot of it")
        header = {"format": FORMAT, "created": time.time(),
                  "chain": {"seq": report.count, "head": report.head},
                  "global_root": store.roots()["global_root"],
                  "resources": len(store.list_resources())}
        temporary = target.with_name(target.name + ".partial")
        tops = []
        with temporary.open("w", encoding="ascii") as out:
            out.write(json.dumps(header, sort_keys=True) + "\n")
            for info in store.list_resources():
                state_root = store.roots(info.id)["state_root"]
                line = {"resource": list(resource_row(info)),
                        "code": base64.b64encode(store.load_code(info.id)).decode(),
                        "state_root": state_root,
                        "state": [[k.hex(), v.hex()] for k, v in store.state_items(info.id)]}
                out.write(json.dumps(line, sort_keys=True) + "\n")
                if state_root != EMPTY.hex():
                    tops.append((key_hash(info.id.encode()),
                                 hashlib.sha256(bytes.fromhex(state_root)).digest()))
    if build(tops)[0].hex() != header["global_root"]:
        temporary.unlink()
        raise InternalError("the store holds state of resources that are not deployed (its "
                            "global root covers more than its resources); no snapshot written")
    os.replace(temporary, target)
    return header


def read_snapshot(path: str | os.PathLike[str], expect_root: str | None = None) -> Snapshot:
    """Parse and check the snapshot at ``path``; ``InvalidRequest`` names the first thing
    wrong (``NotFound`` if there is no such file)."""
    lines = _lines(Path(path))
    header = _json(next(lines, None), 1, "header")
    if header.get("format") != FORMAT:
        raise InvalidRequest(f"not a snapshot of format {FORMAT!r} (header says "
                             f"{header.get('format')!r})")
    chain, global_root = header.get("chain"), header.get("global_root")
    if not isinstance(chain, dict) or type(chain.get("seq")) is not int \
            or not isinstance(chain.get("head"), str) or not isinstance(global_root, str):
        raise InvalidRequest("snapshot header needs chain.seq, chain.head and global_root")
    resources = [_resource(_json(text, number, "resource line"), number)
                 for number, text in enumerate(lines, start=2)]
    if len(resources) != header.get("resources"):
        raise InvalidRequest(f"snapshot header announces {header.get('resources')} resources "
                             f"but the file holds {len(resources)}: it was cut or extended")
    if len({r.info.id for r in resources}) != len(resources):
        raise InvalidRequest("snapshot holds the same resource twice")
    tops = [(key_hash(r.info.id.encode()), hashlib.sha256(r.nodes[""][0]).digest())
            for r in resources if r.nodes]
    root, nodes = build(tops)
    if root.hex() != global_root:
        raise InvalidRequest(f"snapshot global root mismatch: the header says {global_root} "
                             f"but the resources' state roots give {root.hex()}")
    if expect_root is not None and expect_root.lower() != global_root:
        raise InvalidRequest(f"snapshot global root {global_root} is not the expected "
                             f"{expect_root}")
    return Snapshot(resources, nodes, global_root, chain["seq"], chain["head"])


def _lines(path: Path) -> Iterator[str]:
    try:
        handle = path.open("r", encoding="ascii")
    except FileNotFoundError:
        raise NotFound(f"no snapshot file {path}") from None
    with handle:
        try:
            yield from (line for line in handle if line.strip())
        except UnicodeDecodeError:
            raise InvalidRequest(f"snapshot {path} is not ASCII JSON lines") from None


def _json(text: str | None, number: int, what: str) -> dict[str, Any]:
    if text is None:
        raise InvalidRequest("snapshot file is empty")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"snapshot line {number} ({what}) is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"snapshot line {number} ({what}) is not a JSON object")
    return value


def _resource(line: dict[str, Any], number: int) -> Restored:
    where = f"snapshot line {number}"
    try:
        info = resource_of(tuple(line["resource"]))
        code = base64.b64decode(line["code"], validate=True)
        state = [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in line["state"]]
        claimed = str(line["state_root"])
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise InvalidRequest(f"{where} is malformed: {type(exc).__name__}: {exc}") from None
    try:
        check_new_resource(info, code)
    except CoordinatorError as exc:
        raise InvalidRequest(f"{where}: {exc.message}") from None
    if len({k for k, _ in state}) != len(state):
        raise InvalidRequest(f"{where}: resource {info.id} lists a state key twice")
    root, nodes = build((key_hash(k), hashlib.sha256(v).digest()) for k, v in state)
    if root.hex() != claimed:
        raise InvalidRequest(f"{where}: state root mismatch for resource {info.id}: the "
                             f"snapshot says {claimed} but its state gives {root.hex()}")
    return Restored(info, code, state, nodes)


def import_snapshot(store: Any, path: str | os.PathLike[str],
                    expect_root: str | None = None) -> AuditRecord:
    """Check the snapshot at ``path`` and restore it into ``store``, which must be empty
    (no resources, no state, no audit records); returns the ``snapshot`` record."""
    snapshot = read_snapshot(path, expect_root)
    record: AuditRecord = store.restore(snapshot)
    return record


def refuse_unless_empty(resources: int, records: int, root: bytes) -> None:
    """A snapshot goes only into an empty store: merging would mix two histories."""
    if resources or records or any(root):
        raise InvalidRequest(f"a snapshot is imported only into an empty data directory; "
                             f"this one has {resources} resources and {records} audit "
                             "records")
