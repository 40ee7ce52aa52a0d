"""The lock scope of an execution tree: the state locks a top-level execution and its nested
calls take, held from the engine's first read to the commit of the tree's writes.

Engines read committed state and return absolute writes, so two executions of one contract
running at once would lose an update. The lock is taken once per top-level execution tree (a
nested call back into a resource the tree holds is refused) and every wait is bounded by the
deadline, so crossing nested calls cannot deadlock.
"""

from __future__ import annotations

from typing import Any

from coordinator_core.execution.checks import stopped
from coordinator_core.execution.ledger import Entry
from coordinator_core.execution.locks import ResourceLocks
from coordinator_hookspecs import AuditRecord, InvalidRequest


class Tree:
    """What a top-level execution shares with its nested calls: the state locks taken (held
    until the top level committed) and the nested executions' final records (committed in
    the same transaction)."""

    __slots__ = ("children", "locks", "records")

    def __init__(self) -> None:
        self.locks: list[str] = []  # resource ids whose state lock the tree holds
        self.records: list[AuditRecord] = []
        self.children: list[Entry] = []  # every nested execution's ledger entry


class StateScope:
    """Takes and gives back the state locks of execution trees."""

    __slots__ = ("locks",)

    def __init__(self, locks: ResourceLocks) -> None:
        self.locks = locks

    def acquire(self, resource_id: str, token: Any, tree: Tree) -> None:
        """Serialise executions that may write ``resource_id``'s state, from read to commit:
        the lock joins ``tree``'s until ``release``. Waits at most until the deadline and
        stops when the execution is cancelled."""
        held = tree.locks
        if resource_id in held:
            # A nested call back into a stateful resource of its own tree would read the
            # committed state, not the pending writes of the outer call, and the later
            # write would silently undo the earlier one.
            raise InvalidRequest(
                f"re-entrant call into resource {resource_id[:12]}, which this execution "
                "tree already runs: nested calls into a stateful resource of the same tree "
                "are refused"
            )
        locks = self.locks
        # Uncontended (the usual case): one try, no clock read, no timed wait.
        if not locks.acquire(resource_id, 0.0):
            # Contended: wait in short slices so a cancel is seen, bounded by the deadline.
            while not locks.acquire(resource_id, min(0.01, max(0.0, token.remaining))):
                reason = token.poll()
                if reason is not None:
                    raise stopped(
                        reason,
                        f"waiting for resource {resource_id[:12]}, held by another execution",
                    )
        held.append(resource_id)

    def release(self, tree: Tree) -> None:
        """Give back every state lock ``tree`` holds, last taken first."""
        held, tree.locks = tree.locks, []
        for resource_id in reversed(held):
            self.locks.release(resource_id)
