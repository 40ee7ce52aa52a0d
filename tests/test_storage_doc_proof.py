"""The worked proofs in docs/storage.md are real: the store, given the documented state,
produces exactly those proofs and that root, and ``verify_proof`` accepts them."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from coordinator_core.store import BoundProcessor, MemoryStore
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import AuditRecord, Effect, verify_proof
from coordinator_hookspecs.proofs import inner_node, leaf_node

DOC = Path(__file__).resolve().parents[1] / "docs" / "storage.md"
STATE = {b"alice": b"100", b"bob": b"50", b"carol": b"7"}
ROOT = "ee9c7f9b922a42e10736d4a99c39bbd1b87f26bec436fb7060358cb325a02aad"
RID = hashlib.sha256(b"doc").hexdigest()


def documented_proofs() -> list[dict[str, object]]:
    text = DOC.read_text()
    return [json.loads(block) for block in re.findall(r"```json worked-proof\n(.*?)```", text,
                                                      re.S)]


def test_the_documented_proofs_are_what_the_store_produces() -> None:
    store = MemoryStore()
    record = AuditRecord(seq=0, record_kind="execution", timestamp=1.0, execution_id="e",
                         resource_id=RID, status="succeeded")
    effects = [Effect("state.set", RID, k, v) for k, v in STATE.items()]
    final = store.finish(record, effects, (BoundProcessor("state", StateProcessor(), KINDS),))
    assert final.records[-1].detail["state_root"] == ROOT
    assert ROOT in DOC.read_text()
    proofs = documented_proofs()
    assert len(proofs) == 2
    assert proofs == [store.prove(RID, b"bob")["proof"], store.prove(RID, b"dave")["proof"]]
    for proof in proofs:
        assert verify_proof(proof, ROOT)


def test_the_documented_arithmetic() -> None:
    bob = leaf_node(hashlib.sha256(b"bob").digest(), hashlib.sha256(b"50").digest())
    assert bob.hex() == "8630a0219da60d715f3ef7cfe2686421a3a41fc82a4ab67c7947b79f425fc5f1"
    left = bytes.fromhex("b7dd5e289559575b1e3bb9f3f2cc4042f1a4750be0d3242e1d223f78319efc28")
    assert inner_node(left, bob).hex() == ROOT
