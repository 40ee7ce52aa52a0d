"""Built-in plugin: the state effect processor (``state.set``, ``state.delete``, ``event``,
``log``).

Engines never write state; they return effects. This processor turns one execution's effects
into writes on the store's open transaction (``txn``, see ``store.base.StoreTxn``), so they
commit together with the execution's final audit record or not at all. It needs no staging of
its own: the store's transaction (SQLite savepoint, or the memory store's staged ops) is the
staging, hence ``commit`` and ``rollback`` have nothing left to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator_hookspecs import (
    Effect,
    EffectKind,
    EffectProcessorRecord,
    InvalidRequest,
    hookimpl,
)

KINDS = frozenset({EffectKind.STATE_SET, EffectKind.STATE_DELETE, EffectKind.EVENT,
                   EffectKind.LOG})
_MAX_LEVEL = 16  # a guest-chosen log level is a short ASCII word, never a payload


def _level(raw: bytes) -> str:
    level = bytes(raw[:_MAX_LEVEL]).decode("ascii", "replace").strip().lower()
    return level or "info"


class StateProcessor:
    """Writes one execution's state effects through the store transaction."""

    #: ``prepare`` only writes through ``txn``; ``commit`` and ``rollback`` do nothing (see
    #: ``BoundProcessor``): the SQLite store commits its effects on its short path.
    txn_only = True

    def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None:
        for effect in effects:
            if not isinstance(effect.resource_id, str) or not effect.resource_id:
                raise InvalidRequest(f"{effect.kind} effect names no resource id")
            kind = effect.kind
            if kind == EffectKind.STATE_SET:
                txn.put_state(effect.resource_id, effect.key, effect.value)
            elif kind == EffectKind.STATE_DELETE:
                txn.delete_state(effect.resource_id, effect.key)
            elif kind == EffectKind.EVENT:
                txn.add_event(effect.resource_id, execution_id, effect.value)
            elif kind == EffectKind.LOG:
                txn.add_log(effect.resource_id, execution_id, _level(effect.key), effect.value)
            else:  # only reachable if someone re-registers this object for other kinds
                raise InvalidRequest(f"the state processor does not handle effect kind {kind!r}")

    def commit(self, execution_id: str) -> None:
        """Nothing to do: the writes committed with the store transaction."""

    def rollback(self, execution_id: str) -> None:
        """Nothing to do: the store discarded the writes with its savepoint."""


@hookimpl
def coordinator_register_effect_processors(config: Any) -> list[EffectProcessorRecord]:
    return [EffectProcessorRecord(name="state", processor=StateProcessor(), kinds=KINDS)]
