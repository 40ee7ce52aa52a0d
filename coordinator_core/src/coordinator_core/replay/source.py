"""The data directory a replay reads: its audit log, resources and kept requests, read-only.

Nothing here writes to the source: it is opened with SQLite's ``mode=ro`` and resource files
are read as they are on disk (a file edited behind the store's back is replayed as found, so
its executions diverge instead of the replay stopping at the file).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from coordinator_core.store.chain import ChainWalker, record_of_row
from coordinator_core.store.requests import load
from coordinator_core.store.schema import AUDIT_COLUMNS, RESOURCE_COLUMNS, resource_of
from coordinator_hookspecs import AuditRecord, InvalidRequest, NotFound, ResourceInfo

#: Final records whose outcome depends on timing or on the machine, replayed as recorded
#: (docs/replay.md).
TIMING_STATUSES = frozenset({"cancelled", "timed_out"})
TIMING_KINDS = frozenset({"quota_exceeded", "internal"})


def recorded_only(record: AuditRecord) -> bool:
    """True for a top-level execution a replay does not re-run: it was cancelled, timed out
    or turned away by quota, outcomes decided by the clock and not by its request, or it
    failed with ``internal`` (the coordinator's or the machine's fault: a full disk, a
    store lock held too long), which left no state change either."""
    return record.status in TIMING_STATUSES or record.error_kind in TIMING_KINDS


def top_level(record: AuditRecord) -> bool:
    return record.record_kind == "execution" and record.parent_id is None


@attrs.frozen
class Code:
    """A resource's bytes as found in the source; ``intact`` is False when they no longer
    hash to its id."""

    info: ResourceInfo
    code: bytes
    intact: bool


class Source:
    """A data directory opened read-only for a replay."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        path = self.data_dir / "coordinator.db"
        if not path.is_file():
            raise NotFound(f"no coordinator data directory at {self.data_dir} "
                           "(coordinator.db is missing)")
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                    check_same_thread=False)

    def close(self) -> None:
        self.conn.close()

    def _rows(self, until: int | None) -> Iterator[tuple[Any, ...]]:
        limit = until if until is not None else 2**63 - 1
        cursor = self.conn.execute(
            f"SELECT {AUDIT_COLUMNS} FROM audit WHERE seq <= ? ORDER BY seq", (limit,))
        yield from cursor

    def verify(self) -> int:
        """Walk the whole audit chain; return its record count, or raise ``InvalidRequest``
        naming the first bad record (a replay of a tampered log would prove nothing)."""
        walker = ChainWalker()
        for row in self._rows(None):
            if not walker.feed(row[:13], row[13], row[14], row[15]):
                break
        report = walker.report()
        if not report.ok:
            raise InvalidRequest(f"the audit log of {self.data_dir} does not verify, so it "
                                 f"cannot be replayed: {report.reason}")
        return report.count

    def records(self, until: int | None = None) -> Iterator[AuditRecord]:
        """The audit records up to ``until`` (all when None), in ``seq`` order."""
        for row in self._rows(until):
            yield record_of_row(row)

    def request_body(self, digest: str) -> bytes | None:
        """The request kept under ``digest``, None if none; ``InvalidRequest`` when its body
        no longer hashes to it (edited in the table: the chain covers the digest only)."""
        body = load(self.conn, digest)
        if body is not None and hashlib.sha256(body).hexdigest() != digest:
            raise InvalidRequest(f"the kept request {digest} is corrupt: its body does not "
                                 "hash to its digest")
        return body

    def missing_request(self, until: int | None) -> AuditRecord | None:
        """The first top-level execution to re-run whose request was not kept, if any."""
        for record in self.records(until):
            if not top_level(record) or recorded_only(record):
                continue
            digest = record.detail.get("request")
            if not isinstance(digest, str) or self.request_body(digest) is None:
                return record
        return None

    def resource(self, resource_id: str) -> Code:
        rows = self.conn.execute(f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = ?",
                                 (resource_id,)).fetchall()
        if not rows:
            raise NotFound(f"the source has a deploy record of {resource_id} but no such "
                           "resource")
        file = self.data_dir / "resources" / resource_id[:2] / resource_id
        try:
            code = file.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"the bytes of resource {resource_id} are missing from "
                           f"{file.parent}") from None
        return Code(resource_of(rows[0]), code, hashlib.sha256(code).hexdigest() == resource_id)
