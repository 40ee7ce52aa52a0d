"""Checking a state proof: the sparse Merkle tree's hashing and ``verify_proof``.

The coordinator commits to each resource's key/value state with a sparse Merkle tree over
``sha256(key) -> sha256(value)`` and to all resources with a second tree of the same kind over
``resource id -> state root`` (docs/storage.md, "State roots"). A light client, another node
or an auditor holding a root checks a proof with :func:`verify_proof` alone: this module uses
nothing but the standard library and needs no store, no coordinator and no network.

The tree, exactly (so anyone can re-implement it):

- a leaf's path is the 256 bits of ``k = sha256(key)``, most significant bit of the first
  byte first; bit 0 chooses the left (0) or right (1) child of the root;
- ``EMPTY`` (32 zero bytes) is the hash of an empty subtree;
- a subtree holding exactly one leaf is that leaf, at the subtree's root:
  ``sha256(0x00 || k || sha256(value))``;
- a subtree holding two or more leaves is an internal node:
  ``sha256(0x01 || left || right)``, even when one side is empty.

The structure is a function of the set of keys and values alone, so the root does not depend
on the order in which keys were written or deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from coordinator_hookspecs.errors import InvalidRequest

EMPTY = bytes(32)
#: ``format`` of every proof this version produces.
PROOF_FORMAT = "coordinator-smt-sha256/1"


def leaf_node(key_hash: bytes, value_hash: bytes) -> bytes:
    """Hash of the leaf for ``key_hash`` (``sha256(key)``) holding ``value_hash``."""
    return hashlib.sha256(b"\x00" + key_hash + value_hash).digest()


def inner_node(left: bytes, right: bytes) -> bytes:
    """Hash of an internal node from its two children's hashes."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def bit(key_hash: bytes, depth: int) -> int:
    """Bit ``depth`` of the path ``key_hash`` (0: left, 1: right)."""
    return (key_hash[depth >> 3] >> (7 - (depth & 7))) & 1


def verify_proof(proof: Mapping[str, Any], root: str | bytes) -> bool:
    """True if ``proof`` shows, under ``root``, that its ``key`` holds its ``value`` (an
    inclusion proof) or holds nothing (``value`` null: an exclusion proof); False otherwise.

    ``proof`` is the JSON object ``coordinator state prove`` prints (docs/storage.md):
    ``key`` (hex of the raw key), ``value`` (hex or null), ``siblings`` (hex hashes from the
    root's child level down to the proven position) and ``leaf`` (null, or the
    ``key_hash``/``value_hash`` of the other leaf found where the key would be). ``root`` is
    hex or 32 bytes. A proof that is not even well formed raises ``InvalidRequest`` naming
    the field; a well-formed proof that does not lead to ``root`` returns False.

    >>> verify_proof({"format": PROOF_FORMAT, "key": "6b", "value": None, "siblings": [],
    ...               "leaf": None}, "00" * 32)
    True
    """
    if not isinstance(proof, Mapping):
        raise InvalidRequest(f"a proof is a JSON object, got {type(proof).__name__}")
    if proof.get("format", PROOF_FORMAT) != PROOF_FORMAT:
        raise InvalidRequest(f"unknown proof format {proof.get('format')!r}; this verifier "
                             f"checks {PROOF_FORMAT!r}")
    expected = _hash32(root, "root")
    key_hash = hashlib.sha256(_hex(proof.get("key"), "key")).digest()
    siblings = proof.get("siblings")
    if not isinstance(siblings, list) or len(siblings) > 256:
        raise InvalidRequest("proof field 'siblings' must be a list of at most 256 hashes")
    path = [_hash32(s, f"siblings[{i}]") for i, s in enumerate(siblings)]
    value, other = proof.get("value"), proof.get("leaf")
    if value is not None:
        if other is not None:
            return False  # an inclusion proof ends at the key's own leaf, never another
        node = leaf_node(key_hash, hashlib.sha256(_hex(value, "value")).digest())
    elif other is not None:
        if not isinstance(other, Mapping):
            raise InvalidRequest("proof field 'leaf' must be null or an object")
        other_key = _hash32(other.get("key_hash"), "leaf.key_hash")
        if other_key == key_hash or any(bit(other_key, d) != bit(key_hash, d)
                                        for d in range(len(path))):
            return False  # that leaf cannot sit on this key's path while the key is absent
        node = leaf_node(other_key, _hash32(other.get("value_hash"), "leaf.value_hash"))
    else:
        node = EMPTY
    for depth in range(len(path) - 1, -1, -1):
        sibling = path[depth]
        node = inner_node(sibling, node) if bit(key_hash, depth) else inner_node(node, sibling)
    return node == expected


def _hex(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"proof field {field!r} must be a hex string, got "
                             f"{type(value).__name__}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidRequest(f"proof field {field!r} is not hex: {value[:80]!r}") from None


def _hash32(value: Any, field: str) -> bytes:
    raw = bytes(value) if isinstance(value, bytes | bytearray) else _hex(value, field)
    if len(raw) != 32:
        raise InvalidRequest(f"proof field {field!r} must be a 32-byte hash, got {len(raw)} "
                             "bytes")
    return raw
