"""Dry runs: queries and simulations, which go through the pipeline but commit nothing.

A **query** (``Coordinator.query``) is read-only: it reads committed state without taking
the state lock, its fee is capped by ``[coordinator] query_fee_limit``, the engine refuses
every effect (``ExecutionContext.read_only``) and the pipeline refuses an engine result that
carries one anyway; quota is neither checked nor consumed. A **simulation**
(``Coordinator.simulate``) runs exactly what ``execute`` would run (security, the quota
policies' ``check`` instead of ``acquire``, the state lock, nested calls) and keeps the
effects in its result instead of committing them.

Neither writes an audit record of an execution nor reports to the metrics sinks (which count
executions); ``DryRunCounters`` counts them instead, for ``metrics()["dry_runs"]``.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import Counter
from typing import Any

from coordinator_hookspecs import ExecutionResult


class DryRun:
    """What kind of dry run an execution tree is; nested calls inherit it."""

    __slots__ = ("name", "read_only")

    def __init__(self, name: str, read_only: bool) -> None:
        self.name = name
        self.read_only = read_only

    def __repr__(self) -> str:
        return f"DryRun({self.name!r})"


QUERY = DryRun("query", read_only=True)
SIMULATE = DryRun("simulate", read_only=False)


class DryRunCounters:
    """Counts of finished dry runs, by kind and status, and the fee they used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._fee: Counter[str] = Counter()
        self._sampled = 0
        self._queries = itertools.count()

    def record(self, dry: DryRun, result: ExecutionResult) -> None:
        with self._lock:
            self._counts[dry.name, result.status.value] += 1
            self._fee[dry.name] += result.fee_used

    def sample(self, rate: float) -> bool:
        """Whether this query goes to the audit log, for a sample ``rate`` (0 to 1): every
        1/rate-th query, counted rather than drawn, so the choice is deterministic."""
        if not rate:
            return False
        n = next(self._queries)  # atomic: no lock
        if math.floor((n + 1) * rate) <= math.floor(n * rate):
            return False
        with self._lock:
            self._sampled += 1
        return True

    def snapshot(self) -> dict[str, Any]:
        """``{"query": {"count", "by_status", "fee_used", "audited"}, "simulate": {...}}``."""
        with self._lock:
            out: dict[str, Any] = {}
            for dry in (QUERY, SIMULATE):
                by_status = {status: n for (kind, status), n in self._counts.items()
                             if kind == dry.name}
                out[dry.name] = {"count": sum(by_status.values()), "by_status": by_status,
                                 "fee_used": self._fee[dry.name]}
            out[QUERY.name]["audited"] = self._sampled
            return out
