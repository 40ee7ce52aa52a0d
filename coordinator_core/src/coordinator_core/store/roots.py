"""State roots, proofs and previews as a store answers them, over any ``NodeSource``.

Both stores call these with their own node source (SQLite over one read transaction, or the
memory store's dict), so a root, a proof and a preview mean the same in memory and on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator_core.store.effects import blob
from coordinator_core.store.merkle import (
    GLOBAL,
    DictSource,
    NodeSource,
    apply_writes,
    prove,
    root_of,
)
from coordinator_hookspecs import Effect, EffectKind, InvalidRequest


def roots_of(source: NodeSource, resource_id: str | None) -> dict[str, Any]:
    """``{"global_root": hex}``, with ``"state_root"`` too when ``resource_id`` is given."""
    out: dict[str, Any] = {"global_root": root_of(source, GLOBAL).hex()}
    if resource_id is not None:
        out = {"resource_id": resource_id, "state_root": root_of(source, resource_id).hex(),
               **out}
    return out


def proof_of(source: NodeSource, resource_id: str, key: bytes,
             value: bytes | None) -> dict[str, Any]:
    """What ``coordinator state prove`` prints: the value, both roots, the proof of the key
    under the state root (``proof``) and of that state root under the global root
    (``root_proof``: key = the resource id's UTF-8 bytes, value = its state root)."""
    key = blob(key, "state key")
    state_root = root_of(source, resource_id)
    empty = state_root == bytes(32)
    return {
        "resource_id": resource_id,
        "key": key.hex(),
        "value": value.hex() if value is not None else None,
        "state_root": state_root.hex(),
        "global_root": root_of(source, GLOBAL).hex(),
        "proof": prove(source, resource_id, key, value),
        "root_proof": prove(source, GLOBAL, resource_id.encode(),
                            None if empty else state_root),
    }


def state_writes(effects: Sequence[Effect]) -> dict[str, dict[bytes, bytes | None]]:
    """The state writes in ``effects`` (resource -> key -> value, None for a delete), the
    last write of a key winning, as the state processor would apply them."""
    writes: dict[str, dict[bytes, bytes | None]] = {}
    for effect in effects:
        kind = effect.kind
        if kind not in (EffectKind.STATE_SET, EffectKind.STATE_DELETE):
            continue
        if not isinstance(effect.resource_id, str) or not effect.resource_id:
            raise InvalidRequest(f"{kind} effect names no resource id")
        value = blob(effect.value, "state value") if kind == EffectKind.STATE_SET else None
        writes.setdefault(effect.resource_id, {})[blob(effect.key, "state key")] = value
    return writes


def preview(source: NodeSource, effects: Sequence[Effect],
            resource_id: str | None = None) -> dict[str, Any]:
    """The roots ``effects`` would produce if committed now, writing nothing:
    ``{"state_roots": {resource id: hex}, "global_root": hex}``, one entry per resource
    written (and ``resource_id``, written or not)."""
    overlay = DictSource(source)
    written = apply_writes(overlay, state_writes(effects))
    state_roots = {rid: root.hex() for rid, root in written.items() if rid != GLOBAL}
    if resource_id is not None and resource_id not in state_roots:
        state_roots[resource_id] = root_of(overlay, resource_id).hex()
    return {"state_roots": state_roots, "global_root": root_of(overlay, GLOBAL).hex()}
