"""State roots, proofs and snapshots on the coordinator (docs/storage.md, "State roots").

A mixin of ``Coordinator`` like ``ResourceCoordinator``: thin calls into the store, with the
resource id checked first so a typo is ``not_found`` rather than the root of an empty tree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from coordinator_core.store.files import check_id
from coordinator_core.store.snapshot import export_snapshot, import_snapshot
from coordinator_hookspecs import AuditRecord, Effect, InvalidRequest, NotFound


class RootsCoordinator:
    """``state_root``, ``global_root``, ``prove``, ``preview_roots`` and snapshots."""

    store: Any

    def _deployed(self, resource_id: str) -> str:
        if self.store.get_resource(check_id(resource_id)) is None:
            raise NotFound(f"no resource with id {resource_id}")
        return resource_id

    def state_root(self, resource_id: str) -> str:
        """The committed state root of a resource (hex; 64 zeros for empty state)."""
        root: str = self.store.roots(self._deployed(resource_id))["state_root"]
        return root

    def global_root(self) -> str:
        """The committed root over every resource's state root (hex)."""
        root: str = self.store.roots()["global_root"]
        return root

    def prove(self, resource_id: str, key: bytes) -> dict[str, Any]:
        """The committed value of ``key`` with an inclusion (or exclusion) proof under the
        resource's state root and a proof of that root under the global root; check them
        with ``coordinator_hookspecs.verify_proof(result["proof"], result["state_root"])``
        and ``verify_proof(result["root_proof"], result["global_root"])``."""
        if not isinstance(key, bytes | bytearray):
            raise InvalidRequest(f"a state key is bytes, got {type(key).__name__}")
        proof: dict[str, Any] = self.store.prove(self._deployed(resource_id), bytes(key))
        return proof

    def preview_roots(self, effects: Sequence[Effect],
                      resource_id: str | None = None) -> dict[str, Any]:
        """The roots committing ``effects`` now would produce, with nothing written
        (``{"state_roots": {rid: hex}, "global_root": hex}``)."""
        preview: dict[str, Any] = self.store.preview_roots(effects, resource_id)
        return preview

    def export_snapshot(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write resources, state, roots and chain head to ``path``; returns its header."""
        return export_snapshot(self.store, path)

    def import_snapshot(self, path: str | os.PathLike[str],
                        expect_root: str | None = None) -> AuditRecord:
        """Restore a snapshot into this coordinator's empty store, refusing it (nothing
        written) if any root does not check out or differs from ``expect_root``."""
        return import_snapshot(self.store, path, expect_root)
