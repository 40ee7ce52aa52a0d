"""The sparse Merkle tree behind state roots: incremental updates, bulk builds and proofs.

The hashing and the shape of the tree are defined in ``coordinator_hookspecs.proofs`` (the
verifier a client runs); this module keeps such a tree up to date over a ``NodeSource``, the
persisted nodes of one store (SQLite table ``merkle``, or a dict in memory). A node lives at
its *position*, the path from the root as a string of ``0``/``1`` characters (the root is
``""``), and is ``(hash, leaf)``: ``leaf`` is ``sha256(key) || sha256(value)`` for a leaf,
None for an internal node. Empty subtrees have no node.

Every tree is named: a resource's state tree by the resource id, the global tree (resource
id -> that resource's state root; resources with empty state are absent) by ``""``.

A write reads the nodes on its key's path and their siblings (one query for the first
``BATCH`` levels: trees of millions of keys are rarely deeper), then rewrites the path: cost
O(depth), and the expected depth of ``n`` random keys is about ``log2(n)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs

from coordinator_hookspecs import AuditRecord, InternalError
from coordinator_hookspecs.proofs import EMPTY, PROOF_FORMAT, inner_node, leaf_node

Node = tuple[bytes, bytes | None]
GLOBAL = ""
BATCH = 24


class NodeSource(Protocol):
    """Where one store keeps tree nodes."""

    def fetch(self, tree: str, positions: list[str]) -> dict[str, Node]:
        """The nodes present at ``positions`` of ``tree`` (absent: empty subtree)."""
        ...

    def write(self, tree: str, puts: Mapping[str, Node], deletes: Iterable[str]) -> None:
        """Store ``puts`` and remove the nodes at ``deletes``."""
        ...


def key_hash(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def path_of(hashed: bytes) -> str:
    """The 256-bit path of a key hash as ``0``/``1`` characters."""
    return format(int.from_bytes(hashed, "big"), "0256b")


def _flip(bit: str) -> str:
    return "1" if bit == "0" else "0"


class _Path:
    """The nodes on one key's path and their siblings, fetched in batches of levels."""

    def __init__(self, source: NodeSource, tree: str, bits: str) -> None:
        self.source, self.tree, self.bits = source, tree, bits
        self.nodes: dict[str, Node] = {}
        self.fetched = -1  # deepest level fetched
        # a source holding the tree in memory is asked node by node: no batch to build
        cheap = getattr(source, "cheap", None)
        self.one = source.node if cheap is not None and cheap(tree) else None  # type: ignore[attr-defined]

    def _fetch(self, depth: int) -> None:
        bits = self.bits
        stop = min(depth + BATCH, 257)
        positions = [bits[:d] for d in range(depth, stop)]
        positions += [bits[:d - 1] + _flip(bits[d - 1]) for d in range(max(depth, 1), stop)]
        self.nodes.update(self.source.fetch(self.tree, positions))
        self.fetched = stop - 1

    def at(self, depth: int) -> Node | None:
        if self.one is not None:
            return self.one(self.tree, self.bits[:depth])
        if depth > self.fetched:
            self._fetch(depth)
        return self.nodes.get(self.bits[:depth])

    def sibling(self, depth: int) -> Node | None:
        """The node beside the path's node at ``depth`` (>= 1)."""
        if self.one is not None:
            bits = self.bits
            return self.one(self.tree, bits[:depth - 1] + _flip(bits[depth - 1]))
        if depth > self.fetched:
            self._fetch(depth)
        return self.nodes.get(self.bits[:depth - 1] + _flip(self.bits[depth - 1]))

    def descend(self) -> tuple[int, Node | None]:
        """The depth where the path ends (an empty subtree or a leaf) and the node there."""
        depth = 0
        while True:
            node = self.at(depth)
            if node is None or node[1] is not None:
                return depth, node
            depth += 1


def root_of(source: NodeSource, tree: str) -> bytes:
    node = source.fetch(tree, [""]).get("")
    return node[0] if node else EMPTY


def update(source: NodeSource, tree: str, hashed: bytes, value_hash: bytes | None) -> bytes:
    """Set (``value_hash`` given) or remove the leaf of ``hashed`` in ``tree``; return the
    new root. The result is the tree the new set of leaves defines, whatever came before."""
    bits = path_of(hashed)
    path = _Path(source, tree, bits)
    depth, node = path.descend()
    puts: dict[str, Node] = {}
    deletes: set[str] = set()
    if value_hash is not None:
        new_leaf = hashed + value_hash
        if node is not None and node[1] == new_leaf:
            return root_of_path(path)
        if node is None or node[1][:32] == hashed:  # type: ignore[index]
            here = leaf_node(hashed, value_hash)
            puts[bits[:depth]] = (here, new_leaf)
        else:
            here = _split(bits, depth, node, (leaf_node(hashed, value_hash), new_leaf), puts)
    else:
        if node is None or node[1][:32] != hashed:  # type: ignore[index]
            return root_of_path(path)  # absent already
        deletes.add(bits[:depth])
        depth, here = _collapse(path, depth, puts, deletes)
    for level in range(depth - 1, -1, -1):
        sibling = path.sibling(level + 1)
        other = sibling[0] if sibling else EMPTY
        here = inner_node(other, here) if bits[level] == "1" else inner_node(here, other)
        puts[bits[:level]] = (here, None)
    source.write(tree, puts, deletes - puts.keys())
    return here


def root_of_path(path: _Path) -> bytes:
    node = path.at(0)
    return node[0] if node else EMPTY


def _split(bits: str, depth: int, other: Node, new: Node, puts: dict[str, Node]) -> bytes:
    """Put ``new`` where the leaf ``other`` sits at ``depth``: both go down to the first bit
    where their paths differ, under internal nodes with an empty side above that."""
    other_bits = path_of(other[1][:32])  # type: ignore[index]
    fork = depth
    while bits[fork] == other_bits[fork]:
        fork += 1
    puts[bits[:fork + 1]] = new
    puts[other_bits[:fork + 1]] = other
    here = inner_node(other[0], new[0]) if bits[fork] == "1" else inner_node(new[0], other[0])
    puts[bits[:fork]] = (here, None)
    for level in range(fork - 1, depth - 1, -1):
        here = inner_node(EMPTY, here) if bits[level] == "1" else inner_node(here, EMPTY)
        puts[bits[:level]] = (here, None)
    return here


def _collapse(path: _Path, depth: int, puts: dict[str, Node],
              deletes: set[str]) -> tuple[int, bytes]:
    """After removing the leaf at ``depth``: a subtree left with one leaf is that leaf at
    the subtree's root, so a lone sibling leaf moves up as far as it is alone. Returns the
    depth and hash of the highest node that changed."""
    bits = path.bits
    moving: Node | None = None
    here = EMPTY
    while depth > 0:
        sibling = path.sibling(depth)
        if moving is None and sibling is not None and sibling[1] is not None:
            moving = sibling
            deletes.add(bits[:depth - 1] + _flip(bits[depth - 1]))
        elif moving is None or sibling is not None:
            break
        depth -= 1
        deletes.add(bits[:depth])  # an internal node that no longer exists (or the leaf)
    if moving is not None:
        puts[bits[:depth]] = moving
        here = moving[0]
    return depth, here


def build(leaves: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, dict[str, Node]]:
    """The tree of ``(key hash, value hash)`` pairs at once: its root and every node (for a
    snapshot's import and the upgrade of a directory that has state but no tree)."""
    ordered = sorted(leaves)
    nodes: dict[str, Node] = {}

    def subtree(lo: int, hi: int, depth: int, pos: str) -> bytes:
        if lo == hi:
            return EMPTY
        if hi - lo == 1:
            hashed, value_hash = ordered[lo]
            here = leaf_node(hashed, value_hash)
            nodes[pos] = (here, hashed + value_hash)
            return here
        split = lo
        while split < hi and path_of(ordered[split][0])[depth] == "0":
            split += 1
        here = inner_node(subtree(lo, split, depth + 1, pos + "0"),
                          subtree(split, hi, depth + 1, pos + "1"))
        nodes[pos] = (here, None)
        return here

    return subtree(0, len(ordered), 0, ""), nodes


def prove(source: NodeSource, tree: str, key: bytes, value: bytes | None) -> dict[str, Any]:
    """The proof (``coordinator_hookspecs.verify_proof``'s format) that ``key`` holds
    ``value`` (its committed value, None when absent) in ``tree``."""
    hashed = key_hash(key)
    path = _Path(source, tree, path_of(hashed))
    depth, node = path.descend()
    siblings = []
    for level in range(1, depth + 1):
        sibling = path.sibling(level)
        siblings.append((sibling[0] if sibling else EMPTY).hex())
    other = None
    mine = node is not None and node[1] is not None and node[1][:32] == hashed
    if node is not None and not mine:
        other = {"key_hash": node[1][:32].hex(), "value_hash": node[1][32:].hex()}  # type: ignore[index]
    if mine != (value is not None) or (
            mine and node[1][32:] != hashlib.sha256(value).digest()):  # type: ignore[arg-type,index]
        raise InternalError(f"the state tree of {tree or 'all resources'} disagrees with its "
                            f"state at key {key.hex()}: the store is corrupt")
    return {"format": PROOF_FORMAT, "key": key.hex(),
            "value": value.hex() if value is not None else None,
            "siblings": siblings, "leaf": other}


class DictSource:
    """Nodes in a dict (the memory store), optionally over another source (a preview)."""

    def __init__(self, base: NodeSource | None = None) -> None:
        self.base = base
        self.nodes: dict[tuple[str, str], Node | None] = {}

    def fetch(self, tree: str, positions: list[str]) -> dict[str, Node]:
        nodes = self.nodes
        found: dict[str, Node] = {}
        missing = []
        for pos in positions:
            hit = nodes.get((tree, pos), False)
            if hit is False:
                missing.append(pos)
            elif hit is not None:
                found[pos] = hit  # type: ignore[assignment]
        if missing and self.base is not None:
            found.update(self.base.fetch(tree, missing))
        return found

    def cheap(self, tree: str) -> bool:
        """Whether ``node`` answers without a query (the base, if any, holds ``tree``)."""
        base = self.base
        if base is None:
            return True
        cheap = getattr(base, "cheap", None)
        return cheap is not None and bool(cheap(tree))

    def node(self, tree: str, pos: str) -> Node | None:
        """The node at ``pos`` of ``tree`` (None: empty), one position at a time."""
        hit = self.nodes.get((tree, pos), False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        base = self.base
        if base is None:
            return None
        single = getattr(base, "node", None)
        if single is not None:
            return single(tree, pos)
        return base.fetch(tree, [pos]).get(pos)

    def flush(self) -> None:
        """Hand what was written over to the base source (an overlay's end)."""
        base = self.base
        if base is None or not self.nodes:
            return
        writer = getattr(base, "write_many", None)
        if writer is not None:
            writer(self.nodes)
        else:
            trees: dict[str, tuple[dict[str, Node], list[str]]] = {}
            for (tree, pos), node in self.nodes.items():
                puts, deletes = trees.setdefault(tree, ({}, []))
                if node is None:
                    deletes.append(pos)
                else:
                    puts[pos] = node
            for tree, (puts, deletes) in trees.items():
                base.write(tree, puts, deletes)
        self.nodes = {}

    def write(self, tree: str, puts: Mapping[str, Node], deletes: Iterable[str]) -> None:
        nodes = self.nodes
        overlay = self.base is not None
        for pos in deletes:
            if overlay:
                nodes[(tree, pos)] = None
            else:
                nodes.pop((tree, pos), None)
        for pos, node in puts.items():
            nodes[(tree, pos)] = node


def apply_writes(source: NodeSource, writes: Mapping[str, Mapping[bytes, bytes | None]]
                 ) -> dict[str, bytes]:
    """Apply state writes (resource id -> key -> value, None for a removal) to the
    resources' trees and then to the global tree; returns the new root of each resource
    written and of the global tree (under ``GLOBAL``). The changed nodes are gathered in an
    overlay and handed to ``source`` at the end, in one ``write_many`` where it has one (a
    statement per tree and commit instead of one per key)."""
    overlay = DictSource(source)
    roots: dict[str, bytes] = {}
    for resource_id, changes in writes.items():
        root = b""
        for key, value in changes.items():
            root = update(overlay, resource_id, key_hash(key),
                          None if value is None else hashlib.sha256(value).digest())
        roots[resource_id] = root or root_of(overlay, resource_id)
    top = b""
    for resource_id, root in list(roots.items()):
        top = update(overlay, GLOBAL, key_hash(resource_id.encode()),
                     None if root == EMPTY else hashlib.sha256(root).digest())
    roots[GLOBAL] = top or root_of(overlay, GLOBAL)
    overlay.flush()
    return roots


def with_roots(record: AuditRecord, state_root: bytes, global_root: bytes) -> AuditRecord:
    """``record`` with its resource's state root and the global root in its detail (hex, as
    ``state_root`` and ``global_root``), so the sealed leaf and the chain cover them."""
    detail = dict(record.detail) if record.detail else {}
    detail["state_root"] = state_root.hex()
    detail["global_root"] = global_root.hex()
    return attrs.evolve(record, detail=detail)


def rooted(record: AuditRecord) -> bool:
    """Whether ``record`` carries roots: the final record of an execution."""
    return record.record_kind == "execution" and bool(record.resource_id)
