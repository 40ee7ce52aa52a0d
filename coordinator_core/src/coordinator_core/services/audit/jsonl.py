"""Built-in plugin: an audit sink that appends every audit record to a JSON lines file.

Off unless configured::

    [audit_jsonl]
    path = "audit.jsonl"   # relative paths are inside the data directory
    fsync = false          # true: fsync after every record (slow, survives power loss)

Each line is one record with all its fields, hashes included, so the file is an independent
copy of the chain: comparing its last ``chain_hash`` with ``coordinator audit verify``'s head
detects even a rewrite of the database's whole tail. Like every audit sink it fails open: a
write error is logged by the core and the record stays in the durable log.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import attrs

from coordinator_hookspecs import (
    AuditRecord,
    AuditSinkRecord,
    ConfigSection,
    InvalidRequest,
    hookimpl,
)

_FIELDS = tuple(a.name for a in attrs.fields(AuditRecord))


@attrs.frozen
class AuditJsonlSettings:
    """The ``[audit_jsonl]`` config section."""

    path: Path | None = None
    fsync: bool = False


class JsonlAuditSink:
    """Appends one JSON object per line; safe to call from many threads."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fsync = fsync
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def emit(self, record: AuditRecord) -> None:
        data = {name: getattr(record, name) for name in _FIELDS}
        line = json.dumps(data, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name="audit_jsonl", type=AuditJsonlSettings)]


@hookimpl
def coordinator_register_audit_sinks(config: Any) -> list[AuditSinkRecord]:
    settings: AuditJsonlSettings = config.section("audit_jsonl")
    if settings.path is None:
        return []
    path = settings.path
    if not path.is_absolute():
        if str(config.data_dir) == ":memory:":
            raise InvalidRequest(f"[audit_jsonl] path {str(path)!r} is relative but the data "
                                 "directory is :memory:; give an absolute path")
        path = Path(config.data_dir) / path
    return [AuditSinkRecord(name="audit-jsonl", sink=JsonlAuditSink(path, fsync=settings.fsync))]
