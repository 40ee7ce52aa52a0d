"""Nested (hybrid) executions: ``ExecutionContext.invoke`` of a running execution.

A contract calling a model goes through the whole pipeline again (security, quota, engine
selection), linked to its parent by ``parent_id``, bounded by the parent's deadline,
cancelled with it and depth-limited. Its effects are returned, not committed, so they stand
or fall with the parent's; its state locks and final record join the parent's tree. Inside a
query or simulation it is a dry run of the same kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from coordinator_core.execution.dry import DryRun
from coordinator_core.execution.ledger import Entry
from coordinator_core.execution.scope import Tree
from coordinator_hookspecs import ExecutionRequest, ExecutionResult, Status

if TYPE_CHECKING:
    from coordinator_core.execution.pipeline import Pipeline


class Nested:
    """Runs a child execution of ``parent`` through ``pipeline``, within ``tree``."""

    __slots__ = ("_dry", "_parent", "_pipeline", "_tree")

    def __init__(self, pipeline: Pipeline, parent: Entry, tree: Tree,
                 dry: DryRun | None = None) -> None:
        self._pipeline = pipeline
        self._parent = parent
        self._tree = tree
        self._dry = dry  # a query's or simulation's children are dry runs too

    def __call__(self, request: ExecutionRequest) -> ExecutionResult:
        parent = self._parent
        child = attrs.evolve(
            request,
            parent_id=parent.execution_id,
            parent_resource_id=parent.request.resource_id,
            depth=parent.request.depth + 1,
        )
        pipeline = self._pipeline
        deadline = min(parent.token.deadline, pipeline.deadline(child))
        entry = pipeline.ledger.open(child, deadline, Status.RUNNING)
        self._tree.children.append(entry)
        parent.token.on_cancel(entry.token.cancel)
        return pipeline.run(entry, tree=self._tree, dry=self._dry)
