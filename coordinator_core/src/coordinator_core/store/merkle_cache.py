"""The writer's cache of state-tree nodes: most tree updates read no row at all.

The writer connection is the only one that changes the ``merkle`` table while a store is
open (worker processes commit through the coordinator's writer), so the nodes it has read
or written stay true until it changes them itself. ``CachedNodes`` is a ``NodeSource`` over
the writer's ``SqliteNodes``: the first use of a tree reads it whole (one query), so every
later read of it, a node's absence included, is answered from memory; writes go to SQLite
(in the open transaction) and to memory. A tree that does not fit in ``LIMIT`` entries with
the others is cached node by node instead (its misses, absent nodes included, still cost a
query per batch of levels).

What is written inside a transaction is journalled: a ROLLBACK (or a ROLLBACK TO the
execution's savepoint) puts the cached nodes back as they were, a COMMIT forgets the journal.
Another connection committing to the database (a second process opened with its own writer)
changes SQLite's ``data_version``; ``sync``, called before the trees are used in a
transaction, then drops the whole cache. The cache is also dropped when it outgrows
``LIMIT`` entries, so its memory stays bounded; it then fills again from the table.

The nodes, and so the roots, are exactly those the table holds: the cache changes how
often they are read, never what they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping

from coordinator_core.store.merkle import Node
from coordinator_core.store.merkle_sqlite import SqliteNodes
from coordinator_hookspecs.proofs import EMPTY

#: Most nodes kept (an entry is a few hundred bytes).
LIMIT = 500_000
_UNKNOWN = object()


class CachedNodes:
    """Tree nodes of one writer connection, cached (None: known to be absent)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.table = SqliteNodes(conn)
        self.nodes: dict[tuple[str, str], Node | None] = {}
        #: (key, what the cache held before, what ``pending`` held before) for every change
        #: in the open transaction
        self.journal: list[tuple[tuple[str, str], object, object]] = []
        #: changes of the open transaction not yet in the table: written once, before
        #: COMMIT (``flush``), so a node rewritten by several executions of a group is one row
        self.pending: dict[tuple[str, str], Node | None] = {}
        self.mark = 0
        #: trees held whole (a node not in ``nodes`` is empty), and trees too big for that
        self.whole: set[str] = set()
        self.partial: set[str] = set()
        #: root hashes read from the table for trees not otherwise cached (``known_root``);
        #: a change of a tree's root goes through ``write_many``, which forgets its entry
        self.root_hashes: dict[str, bytes] = {}
        self.version = self._data_version()

    def _data_version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchall()[0][0])

    # -- NodeSource ----------------------------------------------------------------------
    def fetch(self, tree: str, positions: list[str]) -> dict[str, Node]:
        nodes = self.nodes
        found: dict[str, Node] = {}
        if tree in self.whole or (tree not in self.partial and self._load(tree)):
            for pos in positions:  # the whole tree is here: what is not here is empty
                hit = nodes.get((tree, pos))
                if hit is not None:
                    found[pos] = hit
            return found
        missing = []
        for pos in positions:
            key = (tree, pos)
            if key not in nodes:
                missing.append(pos)
            elif (hit := nodes[key]) is not None:
                found[pos] = hit
        if missing:
            read = self.table.fetch(tree, missing)
            for pos in missing:
                node = read.get(pos)
                nodes[(tree, pos)] = node
                if node is not None:
                    found[pos] = node
        return found

    def cheap(self, tree: str) -> bool:
        """Whether ``tree`` is held whole (loading it now if it fits): ``node`` then costs
        a dict lookup."""
        return tree in self.whole or (tree not in self.partial and self._load(tree))

    def node(self, tree: str, pos: str) -> Node | None:
        """The node at ``pos`` of ``tree``, one position at a time (None: empty)."""
        if tree in self.whole:
            return self.nodes.get((tree, pos))
        return self.fetch(tree, [pos]).get(pos)

    def _load(self, tree: str) -> bool:
        """Read all of ``tree`` into the cache, if it fits; False (read node by node from
        then on) if not."""
        room = LIMIT - len(self.nodes)
        rows = self.conn.execute("SELECT pos, hash, leaf FROM merkle WHERE tree = ? LIMIT ?",
                                 (tree, room + 1)).fetchall() if room > 0 else None
        if rows is None or len(rows) > room:
            self.partial.add(tree)
            return False
        nodes = self.nodes
        for pos, digest, leaf in rows:
            nodes[(tree, pos)] = (digest, leaf)
        self.whole.add(tree)
        return True

    def write(self, tree: str, puts: Mapping[str, Node], deletes: Iterable[str]) -> None:
        changes: dict[tuple[str, str], Node | None] = {(tree, pos): None for pos in deletes}
        changes.update(((tree, pos), node) for pos, node in puts.items())
        self.write_many(changes)

    def write_many(self, changes: Mapping[tuple[str, str], Node | None]) -> None:
        """Store or (None) remove nodes of any trees: in the cache, and in the table at the
        transaction's ``flush`` (at once outside a transaction)."""
        nodes = self.nodes
        if not self.conn.in_transaction:
            self.table.write_many(changes)
            nodes.update(changes)
            for tree, pos in changes:
                if not pos:
                    self.root_hashes.pop(tree, None)
            return
        journal, pending, root_hashes = self.journal, self.pending, self.root_hashes
        for key, node in changes.items():
            if not key[1]:  # a new root: the cached node answers from now on
                root_hashes.pop(key[0], None)
            journal.append((key, nodes.get(key, _UNKNOWN), pending.get(key, _UNKNOWN)))
            nodes[key] = node
            pending[key] = node

    def flush(self) -> None:
        """Write the transaction's changes to the table (before COMMIT)."""
        if self.pending:
            self.table.write_many(self.pending)
            self.pending = {}

    def known_root(self, tree: str) -> object:
        """The root hash of ``tree`` (``EMPTY`` for an empty tree) if the cache knows it
        without a query, else ``_UNKNOWN``. An execution that wrote no state still seals
        its resource's root and the global root: known here, that costs no read."""
        nodes = self.nodes
        key = (tree, "")
        if tree in self.whole or key in nodes:
            node = nodes.get(key)
            return node[0] if node is not None else EMPTY
        return self.root_hashes.get(tree, _UNKNOWN)

    def remember_root(self, tree: str, digest: bytes) -> None:
        """Keep a root hash read from the table (outside a transaction's own changes)."""
        self.root_hashes[tree] = digest

    def pending_root(self, tree: str) -> object:
        """The root of ``tree`` as changed in the open transaction but not yet written to
        the table (``_UNKNOWN``: unchanged)."""
        return self.pending.get((tree, ""), _UNKNOWN)

    # -- the transaction's life ----------------------------------------------------------
    def sync(self) -> None:
        """Before the trees are used: drop the cache if another connection committed."""
        version = self._data_version()
        if version != self.version:
            self.version = version
            self.clear()

    def savepoint(self) -> None:
        self.mark = len(self.journal)

    def undo(self) -> None:
        """The execution's savepoint was rolled back to: forget its changes."""
        self._revert(self.mark)

    def rollback(self) -> None:
        self._revert(0)
        self.mark = 0
        self.pending = {}

    def commit(self) -> None:
        """After COMMIT (which ``flush`` preceded)."""
        self.journal.clear()
        self.pending = {}
        self.mark = 0
        if len(self.nodes) > LIMIT:
            self.clear()

    def clear(self) -> None:
        """Forget everything (the table was changed around the cache); what the open
        transaction changed is written to the table first."""
        self.flush()
        self.nodes.clear()
        self.root_hashes.clear()
        self.whole.clear()
        self.partial.clear()
        self.journal.clear()
        self.mark = 0

    def _revert(self, mark: int) -> None:
        nodes, journal, pending = self.nodes, self.journal, self.pending
        while len(journal) > mark:
            key, old, was_pending = journal.pop()
            if old is _UNKNOWN:
                nodes.pop(key, None)
            else:
                nodes[key] = old  # type: ignore[assignment]
            if was_pending is _UNKNOWN:
                pending.pop(key, None)
            else:
                pending[key] = was_pending  # type: ignore[assignment]
