"""The audit log's hash chain (RFC 6962 style) and the walk that verifies it.

Every record is sealed when it is written: ``leaf = sha256(0x00 || canonical(record))`` and
``chain_n = sha256(0x01 || chain_{n-1} || leaf_n)`` with ``chain_0`` = 32 zero bytes. The
0x00/0x01 prefixes keep leaf and interior hashes in separate domains (RFC 6962 §2.1), so a
leaf can never be passed off as a chain value. Because ``seq`` is inside the leaf, moving a
record to another position breaks its leaf; because each chain value covers the previous one,
deleting or editing a record breaks every chain value after it.

The canonical encoding is the ASCII JSON array of the record's fields in the order of
:data:`FIELDS` (compact separators, sorted keys inside ``detail``, floats in Python's shortest
round-trip form). Both stores use this module, so a log verifies the same in memory and on disk.
"""

from __future__ import annotations

import enum
import json
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from coordinator_core.store.base import VerifyReport
from coordinator_hookspecs import AuditRecord, Effect

#: The hashed fields, in canonical order (everything except the two hashes).
FIELDS = (
    "seq", "record_kind", "timestamp", "execution_id", "parent_id", "caller", "resource_id",
    "status", "error_kind", "message", "fee_used", "duration", "effect_digest", "detail",
)
GENESIS = bytes(32)

try:
    # CPython's own SHA-256 (``_sha256``; ``_sha2`` from 3.12 on) rather than hashlib's
    # OpenSSL one: the digests are identical, but each OpenSSL hash allocates and frees EVP
    # contexts, which is measurably slower in the pipeline (three hashes per commit, between an
    # engine call and an SQLite transaction, caches cold).
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - other Python versions and implementations
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment,no-redef,unused-ignore]
_MAX_FEE = 2**63 - 1  # SQLite INTEGER range: larger fees are clamped, never wrapped
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def _jsonable(value: Any) -> Any:
    """Fallback for detail values JSON lacks: bytes as hex, sets sorted, the rest as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if hasattr(value, "value") and isinstance(value.value, str | int):  # enums
        return value.value
    return str(value)


# Built once: json.dumps with options constructs a new encoder on every call.
_dumps_detail = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                                 default=_jsonable).encode

if c_make_encoder is not None:
    # The C encoders themselves, built once: ``JSONEncoder.encode`` builds a new one per call,
    # half of its cost for records this small (sealing is on every execution's commit). No
    # circular-reference markers: a self-containing detail fails with RecursionError instead.
    _c_scalars = c_make_encoder(None, None, encode_basestring_ascii, None, ":", ",", False,
                                False, True)
    _c_detail = c_make_encoder(None, _jsonable, encode_basestring_ascii, None, ":", ",", True,
                               False, True)

    def _scalars_json(scalars: list[Any]) -> str:
        return "".join(_c_scalars(scalars, 0))

    def _detail_json(detail: Any) -> str:
        return "".join(_c_detail(detail, 0))
else:  # pragma: no cover - CPython always has the C accelerator

    def _scalars_json(scalars: list[Any]) -> str:
        return _dumps(scalars)

    def _detail_json(detail: Any) -> str:
        return _dumps_detail(detail)


def detail_json(detail: Any) -> str:
    """The canonical JSON text of a record's ``detail`` (what is stored and hashed)."""
    if not detail:
        return "{}"
    return _detail_json(detail)


def canonical(scalars: Sequence[Any], detail_text: str) -> bytes:
    """Canonical bytes of a record: its 13 scalar fields (``FIELDS`` minus detail) plus the
    detail's canonical JSON text, spliced in so verification needs no re-parse."""
    head = _scalars_json(scalars if type(scalars) is list else list(scalars))
    return (head[:-1] + "," + detail_text + "]").encode("ascii")


def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00" + data).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    return sha256(b"\x01" + previous + leaf).digest()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is str and value.isascii():  # the usual case
        return value
    if type(value) is not str:
        # str enums (Status, ErrorKind) are stored by value, never as "Status.FAILED".
        value = value.value if isinstance(value, enum.Enum) else str(value)
    if value.isascii():
        return str(value)
    # Lone surrogates (from a careless decode) cannot be stored as UTF-8: replace them.
    return str(value.encode("utf-8", "replace").decode("utf-8"))


def scalars_of(record: AuditRecord, seq: int, digest: str | None = None) -> list[Any]:
    """The record's scalar fields, normalised to the types the database gives back.
    ``digest`` replaces a missing ``effect_digest`` (the store computes it from the effects)."""
    fee = record.fee_used
    if type(fee) is not int or not 0 <= fee <= _MAX_FEE:
        fee = int(fee)
        fee = fee if 0 <= fee <= _MAX_FEE else _MAX_FEE if fee > 0 else 0
    r = record
    row = [seq, r.record_kind, float(r.timestamp or time.time()), r.execution_id, r.parent_id,
           r.caller, r.resource_id, r.status, r.error_kind, r.message, fee, float(r.duration),
           r.effect_digest or digest]
    for index in _TEXT_FIELDS:  # usually ASCII str or None already: one check each
        value = row[index]
        if value is not None and (type(value) is not str or not value.isascii()):
            row[index] = _text(value)
    if not row[1]:
        row[1] = ""
    return row


#: Positions of the text fields in ``scalars_of``'s row.
_TEXT_FIELDS = (1, 3, 4, 5, 6, 7, 8, 9, 12)


def seal_row(record: AuditRecord, seq: int, previous: bytes,
             digest: str | None = None) -> list[Any]:
    """Normalise ``record`` and give it ``seq`` and its hashes: its row, 13 scalar fields,
    detail text, leaf and chain hash (ready for an INSERT; the chain hash is last)."""
    row = scalars_of(record, seq, digest)
    detail = record.detail
    text = _detail_json(detail) if detail else "{}"
    leaf = leaf_hash(canonical(row, text))
    row += (text, leaf, chain_hash(previous, leaf))
    return row


def sealed_record(row: Sequence[Any], detail: Any) -> AuditRecord:
    """The sealed ``AuditRecord`` of a row from ``seal_row``; ``detail`` is the original
    record's (returned as stored: unchanged when JSON gives it back as it was)."""
    text = row[13]
    if text == "{}":
        detail = {}
    elif not _flat(detail):  # nested or non-JSON values: return them as stored
        detail = json.loads(text)
    r = row
    return AuditRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                       r[11], r[12], dict(detail), r[14].hex(), r[15].hex())


def seal(record: AuditRecord, seq: int, previous: bytes,
         digest: str | None = None) -> tuple[AuditRecord, list[Any]]:
    """``seal_row`` and the sealed record at once."""
    row = seal_row(record, seq, previous, digest)
    return sealed_record(row, record.detail), row


class SealedRecords(Sequence[AuditRecord]):
    """Records a store sealed and committed, kept as their rows and turned into
    ``AuditRecord`` objects only when read (``record_of_row``, as if read back from the
    log): most executions have no audit sink to read them, and building the objects on every
    commit showed in the pipeline's benchmark."""

    __slots__ = ("_records", "_rows")

    def __init__(self, rows: Sequence[Sequence[Any]]) -> None:
        self._rows = rows
        self._records: tuple[AuditRecord, ...] | None = None

    def _built(self) -> tuple[AuditRecord, ...]:
        records = self._records
        if records is None:
            records = self._records = tuple(record_of_row(row) for row in self._rows)
        return records

    def __getitem__(self, index: Any) -> Any:
        return self._built()[index]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(self._built())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SealedRecords | tuple | list):
            return self._built() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._built())


_PLAIN = (str, int, float, bool, type(None))


def _flat(detail: Any) -> bool:
    """True if JSON gives ``detail`` back unchanged: a dict of str keys to plain values
    (the usual case; saves a json.loads per record)."""
    return type(detail) is dict and all(
        type(k) is str and type(v) in _PLAIN for k, v in detail.items())


def missing_digest(record: AuditRecord, effects: Sequence[Effect]) -> str | None:
    """The effect digest a store computes for ``record``: None when it has no effects or
    carries its digest already (the pipeline computes it before the commit)."""
    return effect_digest(effects) if effects and record.effect_digest is None else None


def effect_digest(effects: Iterable[Effect]) -> str:
    """sha256 over the effects, each field length-prefixed so boundaries cannot shift.

    One ``join`` of eight parts per effect (lengths as 8-byte big-endian): every execution
    that writes state digests its effects on the commit path."""
    parts: list[bytes] = []
    add = parts.extend
    for effect in effects:
        kind, resource_id, key, value = (_field(effect.kind), _field(effect.resource_id),
                                         _field(effect.key), _field(effect.value))
        add((_length(len(kind)), kind, _length(len(resource_id)), resource_id,
             _length(len(key)), key, _length(len(value)), value))
    return sha256(b"".join(parts)).hexdigest()


_length = struct.Struct(">Q").pack


def _field(value: Any) -> bytes:
    """An effect field as digested: bytes as they are, text as UTF-8. A malformed effect
    (str where bytes belong) still digests; its processor refuses it later with a typed
    error."""
    if type(value) is bytes:
        return value
    if type(value) is str and value.isascii():
        return value.encode()
    return str(value).encode("utf-8", "replace")


def _hex(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def record_of_row(row: Sequence[Any]) -> AuditRecord:
    """An ``AuditRecord`` from a stored row (13 scalars, detail text, leaf, chain)."""
    try:
        detail = json.loads(row[13]) if row[13] != "{}" else {}
    except (TypeError, ValueError):  # a tampered row still reads; verify() reports it
        detail = {"unparsable": str(row[13])}
    r = row  # positional in FIELDS order, which is AuditRecord's own field order
    return AuditRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                       r[11], r[12], detail, _hex(r[14]), _hex(r[15]))


class ChainWalker:
    """Checks stored rows one by one; the first failure is kept with its reason."""

    def __init__(self) -> None:
        self.expected = 1
        self.head = GENESIS
        self.bad: int | None = None
        self.reason = ""

    def feed(self, scalars: Sequence[Any], detail_text: str, leaf: bytes, chain: bytes) -> bool:
        """Check one row (in seq order); return False once the chain is broken."""
        seq = scalars[0]
        if seq != self.expected:
            reason = (f"expected record {self.expected} but found record {seq}: a record was "
                      "deleted or records were reordered")
            return self._fail(self.expected, reason)
        if leaf_hash(canonical(scalars, detail_text)) != leaf:
            return self._fail(seq, f"record {seq} was altered: its content does not match its "
                                   "leaf hash")
        expected_chain = chain_hash(self.head, leaf)
        if expected_chain != chain:
            return self._fail(seq, f"record {seq} breaks the chain: its chain hash does not "
                                   "follow from the previous record")
        self.head = expected_chain
        self.expected += 1
        return True

    def _fail(self, seq: int, reason: str) -> bool:
        self.bad, self.reason = seq, reason
        return False

    def report(self) -> VerifyReport:
        count = self.expected - 1
        if self.bad is not None:
            return VerifyReport(ok=False, count=count, first_bad_seq=self.bad,
                                reason=self.reason, head=self.head.hex())
        return VerifyReport(ok=True, count=count, head=self.head.hex())
