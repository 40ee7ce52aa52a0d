"""``verify_proof``: the stdlib-only check a client runs on ``coordinator state prove``'s
output. The proofs here are built by hand from the tree's definition (docs/storage.md), so the
verifier is tested against the algorithm, not against the store that also produces proofs."""

from __future__ import annotations

import hashlib

import pytest

from coordinator_hookspecs import PROOF_FORMAT, InvalidRequest, verify_proof
from coordinator_hookspecs.proofs import EMPTY, bit, inner_node, leaf_node


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def proof(key: bytes, value: bytes | None, siblings: list[bytes],
          leaf: dict[str, str] | None = None) -> dict[str, object]:
    return {"format": PROOF_FORMAT, "key": key.hex(),
            "value": None if value is None else value.hex(),
            "siblings": [s.hex() for s in siblings], "leaf": leaf}


def two_keys() -> tuple[bytes, bytes]:
    """Two keys whose hashes differ in their first bit, so each is a leaf under the root."""
    first = b"a"
    second = next(k for k in (bytes([i]) for i in range(256)) if bit(h(k), 0) != bit(h(first), 0))
    return first, second


def test_empty_tree_proves_every_key_absent() -> None:
    assert verify_proof(proof(b"anything", None, []), EMPTY.hex())
    assert verify_proof(proof(b"anything", None, []), EMPTY)  # bytes root too
    assert not verify_proof(proof(b"anything", b"v", []), EMPTY)


def test_single_leaf_inclusion_and_exclusion_by_the_other_leaf() -> None:
    root = leaf_node(h(b"k"), h(b"v"))
    assert verify_proof(proof(b"k", b"v", []), root)
    assert not verify_proof(proof(b"k", b"w", []), root)
    other = {"key_hash": h(b"k").hex(), "value_hash": h(b"v").hex()}
    assert verify_proof(proof(b"missing", None, [], other), root)
    assert not verify_proof(proof(b"k", None, [], other), root)  # the leaf IS the key
    assert not verify_proof(proof(b"missing", None, []), root)  # the tree is not empty


def test_two_leaves_and_tampering() -> None:
    a, b = two_keys()
    la, lb = leaf_node(h(a), h(b"1")), leaf_node(h(b), h(b"2"))
    root = inner_node(la, lb) if bit(h(a), 0) == 0 else inner_node(lb, la)
    good = proof(a, b"1", [lb])
    assert verify_proof(good, root.hex())
    assert verify_proof(proof(b, b"2", [la]), root.hex())
    assert not verify_proof({**good, "value": b"2".hex()}, root)              # value
    assert not verify_proof({**good, "siblings": [la.hex()]}, root)           # sibling
    assert not verify_proof(good, h(root))                                     # root
    assert not verify_proof({**good, "siblings": [lb.hex(), EMPTY.hex()]}, root)  # depth


def test_exclusion_by_a_leaf_off_the_path_fails() -> None:
    a, b = two_keys()
    root = leaf_node(h(a), h(b"1"))
    # a leaf whose path does not start like b's cannot sit on b's path one level down
    off = {"key_hash": h(a).hex(), "value_hash": h(b"1").hex()}
    assert not verify_proof(proof(b, None, [EMPTY], off), inner_node(root, EMPTY))


@pytest.mark.parametrize(("broken", "field"), [
    ("not a dict", "JSON object"),
    ({"format": "other/9"}, "unknown proof format"),
    ({"key": 5, "siblings": []}, "'key'"),
    ({"key": "zz", "siblings": []}, "'key' is not hex"),
    ({"key": "00", "siblings": "ab"}, "'siblings'"),
    ({"key": "00", "siblings": ["00"]}, "siblings[0]"),
    ({"key": "00", "siblings": [], "leaf": "x"}, "'leaf'"),
    ({"key": "00", "siblings": [], "leaf": {"key_hash": "00"}}, "leaf.key_hash"),
])
def test_malformed_proofs_are_invalid_requests(broken: object, field: str) -> None:
    with pytest.raises(InvalidRequest, match=field.replace("[", r"\[").replace("]", r"\]")):
        verify_proof(broken, EMPTY)  # type: ignore[arg-type]


def test_a_malformed_root_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="'root' must be a 32-byte hash"):
        verify_proof(proof(b"k", None, []), "00")


def test_verifier_needs_only_the_standard_library() -> None:
    import ast
    import inspect
    import sys

    from coordinator_hookspecs import proofs

    tree = ast.parse(inspect.getsource(proofs))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported - {"__future__", "coordinator_hookspecs"} <= set(sys.stdlib_module_names)
