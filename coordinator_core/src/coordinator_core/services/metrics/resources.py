"""Resource use in the metrics: the CPU seconds and memory bytes of executions that reached
an engine, as totals and histograms, overall and per resource type.

Shared by the live collector (``metrics()["resources"]``) and by ``coordinator metrics``,
which rebuilds the same shape from the audit log's records. Memory reuses the latency
histogram's logarithmic buckets with one unit per nanosecond-second scale step (a byte is
stored as 1e-9), so it spans 100 bytes to 100 GB with the same 12% resolution.
"""

from __future__ import annotations

from typing import Any

from coordinator_core.services.metrics.collector import Histogram

_BYTE = 1e-9  # one byte in the histogram's unit


class ResourceUse:
    """CPU and memory histograms of one group of executions."""

    __slots__ = ("cpu", "memory")

    def __init__(self) -> None:
        self.cpu = Histogram()
        self.memory = Histogram()

    def add_all(self, cpu: list[float], memory: list[int]) -> None:
        self.cpu.add_all(cpu)
        self.memory.add_all([m * _BYTE for m in memory])

    def snapshot(self) -> dict[str, Any]:
        memory = self.memory
        count = memory.count
        return {
            "executions": self.cpu.count,
            "cpu_seconds": round(self.cpu.total, 6),
            "cpu": self.cpu.snapshot(),
            "memory": {
                "count": count,
                "mean_bytes": round(memory.total / count / _BYTE) if count else 0,
                "p50_bytes": round(memory.percentile(0.5) / _BYTE),
                "p90_bytes": round(memory.percentile(0.9) / _BYTE),
                "p99_bytes": round(memory.percentile(0.99) / _BYTE),
                "max_bytes": round(memory.max / _BYTE),
            },
        }


class ResourceStats:
    """``ResourceUse`` overall and per resource type; ``add`` queues samples and ``flush``
    folds them in batches (the collector's fold, the CLI's pass over the log)."""

    __slots__ = ("_pending", "all", "by_type")

    def __init__(self) -> None:
        self.all = ResourceUse()
        self.by_type: dict[str, ResourceUse] = {}
        self._pending: dict[str, tuple[list[float], list[int]]] = {}

    def add(self, resource_type: str | None, cpu: float, memory: int) -> None:
        lists = self._pending.get(resource_type or "")
        if lists is None:
            lists = self._pending[resource_type or ""] = ([], [])
        lists[0].append(cpu)
        lists[1].append(memory)

    def flush(self) -> None:
        for rtype, (cpu, memory) in self._pending.items():
            self.all.add_all(cpu, memory)
            use = self.by_type.get(rtype)
            if use is None:
                use = self.by_type[rtype] = ResourceUse()
            use.add_all(cpu, memory)
        self._pending.clear()

    def snapshot(self) -> dict[str, Any]:
        self.flush()
        out = self.all.snapshot()
        out["by_resource_type"] = {t: u.snapshot() for t, u in self.by_type.items() if t}
        return out
