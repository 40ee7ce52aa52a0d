"""The store interface the coordinator talks to: resources, state, events, audit log.

Two implementations: ``SqliteStore`` (the embedded default: SQLite in WAL mode plus
content-addressed files in the data directory) and ``MemoryStore`` (the NoOp collaborator for
tests and development: same behaviour, nothing on disk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import attrs

from coordinator_hookspecs import AccessPolicy, AuditRecord, Effect, ErrorInfo, ResourceInfo


@attrs.frozen
class BoundProcessor:
    """An effect processor with the kinds it handles, as frozen in the pipeline.

    ``txn_only``: the processor declared (``txn_only = True``) that its ``prepare`` writes
    only through the store transaction it is given, staging nothing elsewhere, and that its
    ``commit`` and ``rollback`` do nothing. A store may then skip those two calls, and run
    ``prepare`` again after rolling back an attempt."""

    name: str
    processor: Any
    kinds: frozenset[str]
    txn_only: bool = False

    @classmethod
    def of(cls, name: str, processor: Any, kinds: frozenset[str]) -> BoundProcessor:
        """Bind ``processor``, honouring ``txn_only = True`` only where its own class (or the
        instance) declares it: a subclass of the built-in state processor whose ``commit``
        does real work must not inherit the promise."""
        declared = {**vars(type(processor)), **getattr(processor, "__dict__", {})}
        return cls(name, processor, kinds, declared.get("txn_only") is True)


@attrs.frozen
class Finished:
    """What ``Store.finish`` returns: the committed records (the execution's final record
    last) and, when an effect processor vetoed or failed, the error that replaced success."""

    records: Sequence[AuditRecord]
    error: ErrorInfo | None = None


@attrs.frozen
class VerifyReport:
    """Result of walking the audit chain: ``first_bad_seq`` is None when intact.

    ``count`` is the number of records that verified; ``head`` the hex chain hash of the last
    of them (publish it elsewhere to detect a rewrite of the whole tail)."""

    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""
    head: str = ""


class StoreTxn(Protocol):
    """The open store transaction an effect processor's ``prepare`` receives as ``txn``.

    Writes made through it commit together with the execution's final audit record, or not
    at all (a veto by any processor of the same execution discards them).
    """

    def put_state(self, resource_id: str, key: bytes, value: bytes) -> None: ...

    def delete_state(self, resource_id: str, key: bytes) -> None: ...

    def add_event(self, resource_id: str, execution_id: str, payload: bytes) -> None: ...

    def add_log(self, resource_id: str, execution_id: str, level: str, message: bytes) -> None:
        """Keep a guest log line as an event of kind ``log`` (dropped when the store was
        opened with ``keep_logs=False``)."""
        ...


class Store(Protocol):
    """Everything the coordinator persists. All methods are thread-safe."""

    # -- resources -----------------------------------------------------------------------
    def put_resource(self, info: ResourceInfo, code: bytes) -> tuple[ResourceInfo, bool]:
        """Store bytes content-addressed under ``info.id``; return (stored info, created).
        Deploying the same bytes again returns the existing info and False."""
        ...

    def get_resource(self, resource_id: str) -> ResourceInfo | None: ...

    def load_code(self, resource_id: str) -> bytes: ...

    def list_resources(self) -> list[ResourceInfo]: ...

    def set_policy(self, resource_id: str, policy: AccessPolicy) -> ResourceInfo: ...

    def resources_version(self) -> int:
        """A number that changes whenever any resource's metadata changes, also when another
        process sharing the store changes it (the core polls it to refresh its caches, at
        most every ``RESOURCES_RECHECK`` seconds: keep it one cheap read)."""
        ...

    # -- state and events ----------------------------------------------------------------
    def state_get(self, resource_id: str, key: bytes) -> bytes | None:
        """Committed value of ``key`` in the resource's namespace (hot path: keep it cheap)."""
        ...

    def state_reader(self, resource_id: str) -> Callable[[bytes], bytes | None]:
        """``state_get`` bound to one resource, for an execution's context; the store may
        serve committed values from a cache (``statecache.py``). Called once per execution,
        so a store binds what it can ahead (a store without a cache returns a closure over
        ``state_get``)."""
        ...

    def state_items(self, resource_id: str) -> list[tuple[bytes, bytes]]: ...

    def events(self, resource_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The resource's latest ``limit`` events and logs, oldest first: dicts with ``seq``,
        ``execution_id``, ``kind`` (``event`` or ``log``), ``level`` (logs), ``payload``
        (bytes) and ``timestamp``."""
        ...

    # -- state roots (docs/storage.md, "State roots") -----------------------------------
    def roots(self, resource_id: str | None = None) -> dict[str, Any]:
        """The committed ``global_root`` (hex) and, when ``resource_id`` is given, that
        resource's ``state_root``."""
        ...

    def prove(self, resource_id: str, key: bytes) -> dict[str, Any]:
        """The committed value of ``key`` (hex or None), both roots, the inclusion or
        exclusion ``proof`` under the state root and the ``root_proof`` of that state root
        under the global root (each checked by ``coordinator_hookspecs.verify_proof``)."""
        ...

    def preview_roots(self, effects: Sequence[Effect],
                      resource_id: str | None = None) -> dict[str, Any]:
        """The roots that committing ``effects`` now would produce, writing nothing:
        ``{"state_roots": {resource id: hex}, "global_root": hex}``."""
        ...

    # -- audit and commit ----------------------------------------------------------------
    def finish(
        self,
        record: AuditRecord,
        effects: Sequence[Effect],
        processors: Sequence[BoundProcessor],
        children: Sequence[AuditRecord] = (),
    ) -> Finished:
        """Commit one finished execution: its effects (only if ``record.status`` is
        succeeded) and its final audit record, atomically, then return. ``children`` are the
        final records of its nested executions, committed in the same transaction before it;
        when the execution's effects are not kept, a child that says succeeded is written as
        failed (its writes were discarded with its parent's). ``record`` comes with
        ``seq``/hashes unset; the store assigns them (and ``effect_digest`` if it is None).
        Group commit may batch several callers into one transaction, but each caller returns
        only after its own records are durable.

        Effects go to every processor whose ``kinds`` contain their kind; an effect kind no
        processor handles is a veto (``invalid_request``). If a processor's ``prepare`` raises,
        the processors prepared so far (the failing one included) are rolled back, none of the
        execution's writes stays, a ``rollback`` record is added and the final record says
        failed, with the error kind of the raised ``CoordinatorError`` (``internal`` for any
        other exception); that error is ``Finished.error``. A second final record for the same
        execution id raises ``InvalidRequest``; a failed transaction raises ``InternalError``.
        See docs/storage.md."""
        ...

    def append(self, record: AuditRecord) -> AuditRecord:
        """Commit a standalone audit record (deploy, security or quota decision)."""
        ...

    def execution(self, execution_id: str) -> AuditRecord | None:
        """The final record of a finished execution, from the durable log."""
        ...

    def audit_records(self, start: int = 1) -> Iterator[AuditRecord]: ...

    def verify(self) -> VerifyReport: ...

    def close(self) -> None: ...
