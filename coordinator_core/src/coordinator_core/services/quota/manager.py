"""QuotaManager: acquires quota policies in order and releases them in reverse, on every path.

``acquire`` returns the list of (release, lease) pairs taken so far; the pipeline hands it
back to ``release`` in a ``finally``, so success, failure, timeout, cancel and an exception in
any later stage all give back what was taken. A policy that raises anything but
``QuotaExceeded`` fails closed (the execution is refused as ``quota_exceeded``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from coordinator_core.log import logger
from coordinator_hookspecs import (
    CancelToken,
    CoordinatorError,
    ExecutionRequest,
    QuotaExceeded,
    QuotaPolicyBase,
    QuotaPolicyRecord,
    ResourceInfo,
    method_or_default,
    optional,
)

Held = list[tuple[str, Callable[[Any, int], None], Any]]


def _takes_token(acquire: Callable[..., Any]) -> bool:
    """Whether a policy's ``acquire`` accepts the optional ``token`` keyword."""
    try:
        parameters = inspect.signature(acquire).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return any((p.name == "token" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
               or p.kind is p.VAR_KEYWORD for p in parameters)


@attrs.frozen
class PolicySnapshot:
    """A policy's optional ``snapshot``, bound once; ``takes_caller``: it has a ``caller``
    parameter (one caller's view, for ``coordinator quota status CALLER``)."""

    name: str
    snapshot: Callable[..., Any]
    takes_caller: bool


class QuotaManager:
    """Walks the quota policy records as a frozen tuple."""

    def __init__(self, records: Sequence[QuotaPolicyRecord]) -> None:
        self.policies = tuple(
            (r.name, r.policy.acquire, r.policy.release, r.applies_to,
             _takes_token(r.policy.acquire))
            for r in records
        )
        #: Whether any policy's ``acquire`` can block (``QuotaPolicyBase.may_wait``).
        self.may_wait = any(
            method_or_default(r.policy, "may_wait", QuotaPolicyBase)() for r in records)
        #: (name, check, applies_to) of every policy with a ``check`` of its own, in order:
        #: what ``simulate`` runs instead of ``acquire`` (a policy without one admits).
        self.checks = tuple(
            (r.name, check, r.applies_to) for r in records
            if (check := optional(r.policy, "check", QuotaPolicyBase)) is not None
        )
        #: Every policy's ``snapshot`` (None: it has none of its own), in policy order.
        self.snapshots: tuple[tuple[str, PolicySnapshot | None], ...] = tuple(
            (r.name, _snapshot_of(r)) for r in records
        )

    def acquire(
        self, request: ExecutionRequest, resource: ResourceInfo, token: CancelToken, held: Held
    ) -> None:
        """Acquire every applicable policy, appending to ``held`` as it goes. Policies whose
        ``acquire`` takes a ``token`` keyword get the execution's token, so a wait of theirs
        ends when the execution is cancelled; the others get its deadline only."""
        deadline = token.deadline
        for name, acquire, release, applies_to, takes_token in self.policies:
            if applies_to is not None and resource.type not in applies_to:
                continue
            try:
                if takes_token:
                    lease = acquire(request, resource, deadline, token=token)
                else:
                    lease = acquire(request, resource, deadline)
            except CoordinatorError as exc:
                if exc.source is None:
                    exc.source = name
                raise
            except Exception as exc:
                raise QuotaExceeded(
                    f"quota policy {name} failed ({type(exc).__name__}: {exc}); refusing",
                    source=name,
                ) from exc
            held.append((name, release, lease))

    def check(self, request: ExecutionRequest, resource: ResourceInfo) -> None:
        """Raise what ``acquire`` would raise for ``request`` now, taking nothing: every
        applicable policy's ``check``, failing closed like ``acquire``."""
        for name, check, applies_to in self.checks:
            if applies_to is not None and resource.type not in applies_to:
                continue
            try:
                check(request, resource)
            except CoordinatorError as exc:
                if exc.source is None:
                    exc.source = name
                raise
            except Exception as exc:
                raise QuotaExceeded(
                    f"quota policy {name} failed its check ({type(exc).__name__}: {exc}); "
                    "refusing", source=name,
                ) from exc

    @staticmethod
    def release(held: Held, fee_used: int) -> None:
        """Give back everything in ``held``, newest first; a failing release is logged."""
        while held:
            name, release, lease = held.pop()
            try:
                release(lease, fee_used)
            except Exception as exc:
                logger.opt(exception=exc).error("quota policy {} failed to release: {}", name, exc)

    def snapshot(self) -> dict[str, Any]:
        """Each policy's own usage report (for ``metrics()`` and ``quota status``)."""
        out: dict[str, Any] = {}
        for name, bound in self.snapshots:
            if bound is None:
                continue
            try:
                out[name] = bound.snapshot()
            except Exception as exc:  # a report must never break metrics()
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return out


def _snapshot_of(record: QuotaPolicyRecord) -> PolicySnapshot | None:
    snapshot = optional(record.policy, "snapshot", QuotaPolicyBase)
    if snapshot is None:
        return None
    try:
        takes_caller = "caller" in inspect.signature(snapshot).parameters
    except (TypeError, ValueError):
        takes_caller = False
    return PolicySnapshot(record.name, snapshot, takes_caller)
