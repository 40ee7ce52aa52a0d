"""``SqliteTxn``: what effect processors write through while a group transaction is open."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator_core.store.effects import blob

if TYPE_CHECKING:
    from coordinator_core.store.sqlite_writer import Writer


class SqliteTxn:
    """The ``txn`` effect processors write through (``StoreTxn``): statements on the open
    group transaction, inside the execution's savepoint."""

    __slots__ = ("_writer",)

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def put_state(self, resource_id: str, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or type(value) is not bytes:  # bytes: the usual case
            key, value = blob(key, "state key"), blob(value, "state value")
        writer = self._writer
        writes = writer.writing(resource_id)
        writer.cursor.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?)",
                              (resource_id, key, value))
        writes[key] = value
        writer.tree_writes.setdefault(resource_id, {})[key] = value

    def delete_state(self, resource_id: str, key: bytes) -> None:
        key = blob(key, "state key")
        writes = self._writer.writing(resource_id)
        self._writer.conn.execute("DELETE FROM state WHERE resource_id = ? AND key = ?",
                                  (resource_id, key))
        writes[key] = None
        self._writer.tree_writes.setdefault(resource_id, {})[key] = None

    def add_event(self, resource_id: str, execution_id: str, payload: bytes) -> None:
        self._writer.conn.execute(
            "INSERT INTO events (resource_id, execution_id, kind, level, payload, timestamp) "
            "VALUES (?, ?, 'event', NULL, ?, ?)",
            (resource_id, execution_id, blob(payload, "event payload"), self._writer.now))

    def add_log(self, resource_id: str, execution_id: str, level: str, message: bytes) -> None:
        if not self._writer.keep_logs:
            return
        self._writer.conn.execute(
            "INSERT INTO events (resource_id, execution_id, kind, level, payload, timestamp) "
            "VALUES (?, ?, 'log', ?, ?, ?)",
            (resource_id, execution_id, str(level), blob(message, "log message"),
             self._writer.now))
