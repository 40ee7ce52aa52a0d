"""The shared table of `make bench`: every benchmark module adds rows to one table.

A benchmark module ``bench/bench_<area>.py`` defines ``run(table: Table) -> None`` and
measures what it compares side by side in the same run (absolute times drift on a shared
machine; ratios hold). ``bench/run.py`` runs every module and writes ``bench/results.md``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import attrs


@attrs.frozen
class Row:
    section: str
    name: str
    value: float
    unit: str
    target: str = ""
    verdict: str = ""
    note: str = ""


@attrs.define
class Table:
    rows: list[Row] = attrs.field(factory=list)

    def add(self, section: str, name: str, value: float, unit: str, *, target: str = "",
            ok: bool | None = None, note: str = "") -> None:
        """Add one measured row; ``ok`` says whether ``target`` was met (None: no target)."""
        verdict = "" if ok is None else ("met" if ok else "MISSED")
        self.rows.append(Row(section, name, value, unit, target, verdict, note))


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``samples``."""
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50, p99


def time_calls(fn: Callable[[], object], n: int, warmup: int = 50) -> list[float]:
    """Per-call wall times (seconds) of ``n`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def interleaved(fns: dict[str, Callable[[], object]], n: int, rounds: int = 5,
                warmup: int = 50,
                round_medians: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Time several variants in alternating rounds so machine noise hits all of them alike.

    ``round_medians``, if given, receives each variant's median per round: ratios of two
    variants taken round by round (``paired_ratio``) cancel the drift between rounds that
    pooled percentiles keep."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            timed = time_calls(fn, per_round, warmup=0)
            samples[name].extend(timed)
            if round_medians is not None:
                round_medians.setdefault(name, []).append(statistics.median(timed))
    return samples


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator/denominator, each round's pair measured back to back."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))
