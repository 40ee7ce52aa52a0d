"""The state trees' nodes in SQLite (table ``merkle``, see ``schema.py``).

``SqliteNodes`` is the ``NodeSource`` of ``merkle.py`` over one connection: the writer's,
inside its open transaction (so a rolled-back execution takes its tree changes with it), or a
reader's, for proofs and previews (over a read transaction, so every node comes from one
committed state).
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
from collections.abc import Iterable, Mapping

from coordinator_core.store.merkle import GLOBAL, Node, build, key_hash
from coordinator_hookspecs.proofs import EMPTY

_PUT = "INSERT OR REPLACE INTO merkle (tree, pos, hash, leaf) VALUES (?, ?, ?, ?)"
_DELETE = "DELETE FROM merkle WHERE tree = ? AND pos = ?"


@functools.lru_cache(maxsize=128)
def _select(count: int) -> str:
    return ("SELECT pos, hash, leaf FROM merkle WHERE tree = ? AND pos IN ("
            + ", ".join("?" * count) + ")")


class SqliteNodes:
    """Tree nodes read and written through ``conn``."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection | sqlite3.Cursor) -> None:
        self.conn = conn

    def fetch(self, tree: str, positions: list[str]) -> dict[str, Node]:
        rows = self.conn.execute(_select(len(positions)), (tree, *positions)).fetchall()
        return {pos: (digest, leaf) for pos, digest, leaf in rows}

    def write(self, tree: str, puts: Mapping[str, Node], deletes: Iterable[str]) -> None:
        conn = self.conn
        gone = [(tree, pos) for pos in deletes]
        if gone:
            conn.executemany(_DELETE, gone)
        conn.executemany(_PUT, [(tree, pos, node[0], node[1]) for pos, node in puts.items()])

    def write_many(self, nodes: Mapping[tuple[str, str], Node | None]) -> None:
        """Store or (None) remove nodes of any trees, keyed by (tree, position)."""
        conn = self.conn
        gone = [key for key, node in nodes.items() if node is None]
        if gone:
            conn.executemany(_DELETE, gone)
        conn.executemany(_PUT, [(tree, pos, node[0], node[1])
                                for (tree, pos), node in nodes.items() if node is not None])


@functools.lru_cache(maxsize=64)
def _select_roots(count: int) -> str:
    return ("SELECT tree, hash FROM merkle WHERE pos = '' AND tree IN ("
            + ", ".join("?" * (count + 1)) + ")")


def roots(conn: sqlite3.Connection | sqlite3.Cursor, resource_ids: Iterable[str]
          ) -> dict[str, bytes]:
    """The roots of ``resource_ids`` and the global root (under ``GLOBAL``), as committed or
    written so far in the open transaction, in one query."""
    wanted = sorted(set(resource_ids))
    found = dict(conn.execute(_select_roots(len(wanted)), (*wanted, GLOBAL)).fetchall())
    return {tree: found.get(tree, EMPTY) for tree in (*wanted, GLOBAL)}


def store_tree(conn: sqlite3.Connection, tree: str, nodes: Mapping[str, Node]) -> None:
    """Replace ``tree`` with ``nodes`` (from ``merkle.build``)."""
    conn.execute("DELETE FROM merkle WHERE tree = ?", (tree,))
    conn.executemany(_PUT, [(tree, pos, node[0], node[1]) for pos, node in nodes.items()])


def rebuild_all(conn: sqlite3.Connection) -> bytes:
    """Build every resource's tree and the global tree from the ``state`` table (in the
    caller's transaction); returns the global root."""
    per_resource: dict[str, list[tuple[bytes, bytes]]] = {}
    for resource_id, key, value in conn.execute("SELECT resource_id, key, value FROM state"):
        per_resource.setdefault(resource_id, []).append(
            (key_hash(bytes(key)), hashlib.sha256(bytes(value)).digest()))
    conn.execute("DELETE FROM merkle")
    tops = []
    for resource_id, leaves in per_resource.items():
        root, nodes = build(leaves)
        store_tree(conn, resource_id, nodes)
        tops.append((key_hash(resource_id.encode()), hashlib.sha256(root).digest()))
    root, nodes = build(tops)
    store_tree(conn, GLOBAL, nodes)
    return root


def differences(conn: sqlite3.Connection | sqlite3.Cursor) -> list[tuple[str, str]]:
    """The (tree, position) of every node where the ``merkle`` table differs from the trees
    a rebuild from the ``state`` table would store (none: the table is exactly right)."""
    per_resource: dict[str, list[tuple[bytes, bytes]]] = {}
    for resource_id, key, value in conn.execute("SELECT resource_id, key, value FROM state"):
        per_resource.setdefault(resource_id, []).append(
            (key_hash(bytes(key)), hashlib.sha256(bytes(value)).digest()))
    expected: dict[tuple[str, str], Node] = {}
    tops = []
    for resource_id, leaves in per_resource.items():
        root, nodes = build(leaves)
        expected.update(((resource_id, pos), node) for pos, node in nodes.items())
        tops.append((key_hash(resource_id.encode()), hashlib.sha256(root).digest()))
    expected.update(((GLOBAL, pos), node) for pos, node in build(tops)[1].items())
    stored = {(tree, pos): (bytes(digest), None if leaf is None else bytes(leaf))
              for tree, pos, digest, leaf in conn.execute(
                  "SELECT tree, pos, hash, leaf FROM merkle")}
    return sorted(key for key in expected.keys() | stored.keys()
                  if expected.get(key) != stored.get(key))
