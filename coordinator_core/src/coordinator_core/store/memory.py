"""``MemoryStore``: the store's semantics with nothing on disk (tests, NoOp, ``:memory:``).

Same contract as ``SqliteStore``: content-addressed resources, per-resource state and events,
effects applied all-or-nothing through the processors' prepare/commit/rollback, and the same
hash-chained audit log that ``verify()`` walks. One lock serialises writers; processors'
writes are staged in a ``MemoryTxn`` and applied only when the execution commits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from coordinator_core.store.base import BoundProcessor, Finished, VerifyReport
from coordinator_core.store.chain import GENESIS, ChainWalker, missing_digest, record_of_row, seal
from coordinator_core.store.effects import (
    Prepared,
    Router,
    blob,
    discarded,
    failed_records,
    finish_processors,
    prepare_all,
)
from coordinator_core.store.files import check_id, check_new_resource
from coordinator_core.store.merkle import (
    GLOBAL,
    DictSource,
    apply_writes,
    root_of,
    rooted,
    with_roots,
)
from coordinator_core.store.roots import preview, proof_of, roots_of
from coordinator_core.store.snapshot import Snapshot, refuse_unless_empty
from coordinator_hookspecs import (
    AccessPolicy,
    AuditRecord,
    Effect,
    InvalidRequest,
    NotFound,
    ResourceInfo,
)


class MemoryTxn:
    """Stages one execution's writes (``StoreTxn``); applied by the store on commit."""

    __slots__ = ("keep_logs", "ops")

    def __init__(self, keep_logs: bool) -> None:
        self.ops: list[tuple[Any, ...]] = []
        self.keep_logs = keep_logs

    def put_state(self, resource_id: str, key: bytes, value: bytes) -> None:
        self.ops.append(("set", resource_id, blob(key, "state key"), blob(value, "state value")))

    def delete_state(self, resource_id: str, key: bytes) -> None:
        self.ops.append(("delete", resource_id, blob(key, "state key")))

    def add_event(self, resource_id: str, execution_id: str, payload: bytes) -> None:
        self.ops.append(("event", resource_id, execution_id, None,
                         blob(payload, "event payload")))

    def add_log(self, resource_id: str, execution_id: str, level: str, message: bytes) -> None:
        if self.keep_logs:
            self.ops.append(("log", resource_id, execution_id, str(level),
                             blob(message, "log message")))


class MemoryStore:
    """Everything in dicts behind one lock."""

    def __init__(self, keep_logs: bool = True) -> None:
        self._keep_logs = keep_logs
        self._lock = threading.Lock()
        self._resources: dict[str, tuple[ResourceInfo, bytes]] = {}
        self._state: dict[str, dict[bytes, bytes]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._event_seq = 0
        #: Audit rows exactly as SqliteStore stores them (tests tamper with these).
        self.rows: list[list[Any]] = []
        self._finals: dict[str, int] = {}
        self._head = GENESIS
        self._router = Router()
        self._resources_version = 0
        #: the state trees' nodes (``merkle.py``), updated with every applied write
        self.nodes = DictSource()

    # -- resources -----------------------------------------------------------------------
    def put_resource(self, info: ResourceInfo, code: bytes) -> tuple[ResourceInfo, bool]:
        check_new_resource(info, code)
        with self._lock:
            if info.id in self._resources:
                return self._resources[info.id][0], False
            info = attrs.evolve(info, size=len(code), deployed_at=info.deployed_at or time.time())
            self._resources[info.id] = (info, bytes(code))
            return info, True

    def get_resource(self, resource_id: str) -> ResourceInfo | None:
        entry = self._resources.get(resource_id)
        return entry[0] if entry else None

    def load_code(self, resource_id: str) -> bytes:
        entry = self._resources.get(check_id(resource_id))
        if entry is None:
            raise NotFound(f"no resource with id {resource_id}")
        return entry[1]

    def list_resources(self) -> list[ResourceInfo]:
        with self._lock:
            infos = [info for info, _ in self._resources.values()]
        return sorted(infos, key=lambda i: (i.deployed_at, i.id))

    def set_policy(self, resource_id: str, policy: AccessPolicy) -> ResourceInfo:
        with self._lock:
            if resource_id not in self._resources:
                raise NotFound(f"no resource with id {resource_id}")
            info, code = self._resources[resource_id]
            info = attrs.evolve(info, policy=policy)
            self._resources[resource_id] = (info, code)
            self._resources_version += 1
            return info

    def resources_version(self) -> int:
        return self._resources_version

    # -- state and events ----------------------------------------------------------------
    def state_get(self, resource_id: str, key: bytes) -> bytes | None:
        with self._lock:  # an execution's writes become visible all at once
            return self._state.get(resource_id, {}).get(key)

    def state_reader(self, resource_id: str) -> Callable[[bytes], bytes | None]:
        state_get = self.state_get

        def get(key: bytes) -> bytes | None:
            return state_get(resource_id, key)

        return get

    def state_items(self, resource_id: str) -> list[tuple[bytes, bytes]]:
        with self._lock:
            return sorted(self._state.get(resource_id, {}).items())

    def events(self, resource_id: str, limit: int = 100) -> list[dict[str, Any]]:
        if type(limit) is not int or limit < 1:
            raise InvalidRequest(f"limit must be a positive integer, got {limit!r}")
        with self._lock:
            return [dict(e) for e in self._events.get(resource_id, [])[-limit:]]

    def _apply(self, ops: list[tuple[Any, ...]], now: float) -> None:
        writes: dict[str, dict[bytes, bytes | None]] = {}
        for op in ops:
            if op[0] == "set":
                self._state.setdefault(op[1], {})[op[2]] = op[3]
                writes.setdefault(op[1], {})[op[2]] = op[3]
            elif op[0] == "delete":
                self._state.get(op[1], {}).pop(op[2], None)
                writes.setdefault(op[1], {})[op[2]] = None
            else:
                self._event_seq += 1
                self._events.setdefault(op[1], []).append(
                    {"seq": self._event_seq, "execution_id": op[2], "kind": op[0],
                     "level": op[3], "payload": op[4], "timestamp": now})
        if writes:
            apply_writes(self.nodes, writes)

    # -- state roots ---------------------------------------------------------------------
    def roots(self, resource_id: str | None = None) -> dict[str, Any]:
        with self._lock:
            return roots_of(self.nodes, resource_id)

    def prove(self, resource_id: str, key: bytes) -> dict[str, Any]:
        with self._lock:
            value = self._state.get(resource_id, {}).get(key)
            return proof_of(self.nodes, resource_id, key, value)

    def preview_roots(self, effects: Sequence[Effect],
                      resource_id: str | None = None) -> dict[str, Any]:
        with self._lock:
            return preview(self.nodes, effects, resource_id)

    def restore(self, snapshot: Snapshot) -> AuditRecord:
        """Write a verified snapshot (``snapshot.py``) into this empty store."""
        with self._lock:
            refuse_unless_empty(len(self._resources), len(self.rows),
                                root_of(self.nodes, GLOBAL))
            for item in snapshot.resources:
                self._resources[item.info.id] = (item.info, item.code)
                if item.state:
                    self._state[item.info.id] = dict(item.state)
                self.nodes.write(item.info.id, item.nodes, ())
            self.nodes.write(GLOBAL, snapshot.global_nodes, ())
            return self._insert(snapshot.record())

    # -- audit and commit ----------------------------------------------------------------
    def _insert(self, record: AuditRecord, digest: str | None = None) -> AuditRecord:
        final = record.record_kind == "execution"
        if final and record.execution_id in self._finals:
            raise InvalidRequest(f"execution {record.execution_id} already has a final "
                                 "audit record")
        if rooted(record):
            record = with_roots(record, root_of(self.nodes, record.resource_id or ""),
                                root_of(self.nodes, GLOBAL))
        sealed, row = seal(record, len(self.rows) + 1, self._head, digest)
        if final:  # only once sealing succeeded: a failed seal leaves no stale index
            self._finals[record.execution_id or ""] = len(self.rows)
        self.rows.append(row)
        self._head = row[-1]
        return sealed

    def finish(self, record: AuditRecord, effects: Sequence[Effect],
               processors: Sequence[BoundProcessor],
               children: Sequence[AuditRecord] = ()) -> Finished:
        digest = missing_digest(record, effects)
        eid = record.execution_id or ""
        with self._lock:
            if not (effects and record.status == "succeeded"):
                kept = children if record.status == "succeeded" else \
                    discarded(children, record, None)
                return Finished((*(self._insert(c) for c in kept), self._insert(record, digest)))
            if eid in self._finals:  # refuse before any processor stages anything
                raise InvalidRequest(f"execution {eid} already has a final audit record")
            routed = self._router.route(effects, processors)
            txn = MemoryTxn(self._keep_logs)
            done = (Prepared([], routed) if not isinstance(routed, list)
                    else prepare_all(eid, routed, txn))
            if done.error is None:
                self._apply(txn.ops, time.time())
                records: tuple[AuditRecord, ...] = (
                    *(self._insert(c) for c in children), self._insert(record, digest))
            else:
                rollback, final = failed_records(record, done.error, done.processors,
                                                 len(effects))
                records = (*(self._insert(c) for c in discarded(children, record, done.error)),
                           self._insert(rollback, digest), self._insert(final, digest))
        for failure in finish_processors(record, done.processors, done.error is None):
            self.append(failure)
        return Finished(records, done.error)

    def append(self, record: AuditRecord) -> AuditRecord:
        with self._lock:
            return self._insert(record)

    def execution(self, execution_id: str) -> AuditRecord | None:
        with self._lock:
            index = self._finals.get(execution_id)
            return None if index is None else record_of_row(self.rows[index])

    def audit_records(self, start: int = 1) -> Iterator[AuditRecord]:
        with self._lock:
            rows = [row for row in self.rows if row[0] >= start]
        for row in rows:
            yield record_of_row(row)

    def verify(self) -> VerifyReport:
        walker = ChainWalker()
        with self._lock:
            rows = list(self.rows)
        for row in rows:
            if not walker.feed(row[:13], row[13], row[14], row[15]):
                break
        return walker.report()

    def close(self) -> None:
        """Nothing to release; the data lives as long as the object."""
