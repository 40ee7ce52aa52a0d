"""The dashboard's time series: the metrics snapshot sampled once a second, kept for the last
minutes, and turned into rates and window means.

The snapshot is cumulative (counts, histograms since start), so a per-second rate is the
difference of two samples over their interval, and a window's mean latency is
``(n2 * mean2 - n1 * mean1) / (n2 - n1)``; percentiles come from the snapshot as they are
(since start). Sampling starts with the first dashboard request and reads ``metrics()``
once a second off the event loop, whatever the number of viewers: executions never wait for
it.

Series that engines add (a model engine's batch sizes, queue and compute time) are found by
name, not by a fixed list: every number under the snapshot's ``models`` and ``batches``
sections, and every engine counter whose name says batch, queue or compute, is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: Seconds between samples, and how many are kept (ten minutes).
PERIOD = 1.0
KEEP = 600
_MODEL_KEY = re.compile(r"batch|queue|compute", re.IGNORECASE)


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number under ``value``, by its dotted path."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


def model_series(snapshot: dict[str, Any]) -> dict[str, float]:
    """The numbers of the snapshot that describe model serving (see the module docstring)."""
    found: dict[str, float] = {}
    for section in ("models", "batches", "batching"):
        found.update(flatten(snapshot.get(section), section))
    for engine, counters in (snapshot.get("engines") or {}).items():
        for path, number in flatten(counters).items():
            if _MODEL_KEY.search(path):
                found[f"engines.{engine}.{path}"] = number
    return found


def reduce(snapshot: dict[str, Any], at: float) -> dict[str, Any]:
    """What one sample keeps of a snapshot."""
    latency = snapshot.get("latency") or {}
    engines = snapshot.get("engines") or {}
    inflight = sum(int(e.get("inflight", 0)) for e in engines.values())
    return {
        "t": at,
        "executions": int(snapshot.get("executions", 0)),
        "by_status": dict(snapshot.get("by_status") or {}),
        "fee_used": int(snapshot.get("fee_used", 0)),
        "latency": {k: latency.get(k, 0.0) for k in ("count", "mean_ms", "p50_ms", "p90_ms",
                                                     "p99_ms")},
        "stages": {name: (h.get("count", 0), h.get("mean_ms", 0.0))
                   for name, h in (snapshot.get("stages") or {}).items()},
        "inflight": inflight,
        "queued": max(0, int(snapshot.get("active", 0)) - inflight),
        "models": model_series(snapshot),
    }


def _window_mean(a: tuple[int, float], b: tuple[int, float]) -> float | None:
    n = b[0] - a[0]
    return round((b[0] * b[1] - a[0] * a[1]) / n, 4) if n > 0 else None


def series(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Chart data from consecutive samples: one point per interval."""
    pairs = list(itertools.pairwise(samples))
    statuses = sorted({s for x in samples for s in x["by_status"]})
    stages = sorted({s for x in samples for s in x["stages"]})
    models = sorted({s for x in samples for s in x["models"]})
    out: dict[str, Any] = {
        "t": [b["t"] for _, b in pairs],
        "throughput": {s: [round((b["by_status"].get(s, 0) - a["by_status"].get(s, 0))
                                 / max(b["t"] - a["t"], 1e-9), 3) for a, b in pairs]
                       for s in statuses},
        "latency": {q: [b["latency"][q] for _, b in pairs] for q in ("p50_ms", "p90_ms",
                                                                      "p99_ms")},
        "window_mean_ms": [_window_mean((a["latency"]["count"], a["latency"]["mean_ms"]),
                                        (b["latency"]["count"], b["latency"]["mean_ms"]))
                           for a, b in pairs],
        "stages": {s: [_window_mean(a["stages"].get(s, (0, 0.0)), b["stages"].get(s, (0, 0.0)))
                       for a, b in pairs] for s in stages},
        "models": {m: [b["models"].get(m) for _, b in pairs] for m in models},
        "inflight": [b["inflight"] for _, b in pairs],
        "queued": [b["queued"] for _, b in pairs],
    }
    return out


class Sampler:
    """Samples ``coordinator.metrics()`` every ``PERIOD`` seconds into a bounded buffer."""

    def __init__(self, coordinator: Any, running: Callable[[], bool] = lambda: True,
                 period: float = PERIOD, keep: int = KEEP) -> None:
        self.coordinator = coordinator
        self.running = running
        self.period = period
        self.samples: deque[dict[str, Any]] = deque(maxlen=keep)
        self.latest: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> dict[str, Any]:
        """Take one sample now (and keep it)."""
        snapshot = await asyncio.to_thread(self.coordinator.metrics)
        self.latest = snapshot
        self.samples.append(reduce(snapshot, time.time()))
        return snapshot

    def start(self) -> None:
        """Start sampling, once (called by every dashboard request)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self.running():
            try:
                await self.sample()
            except Exception:  # the coordinator is closing: try again next period
                pass
            await asyncio.sleep(self.period)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def tiles(self) -> dict[str, Any]:
        """The live figures: the last interval's rate and success, latency, in flight and
        queued, fee spent."""
        recent = list(self.samples)[-6:]  # about five seconds: a steadier rate than one
        snap = self.latest
        latency = snap.get("latency") or {}
        rate = success = None
        if len(recent) >= 2:
            a, b = recent[0], recent[-1]
            done = b["executions"] - a["executions"]
            rate = round(done / max(b["t"] - a["t"], 1e-9), 2)
            ok = b["by_status"].get("succeeded", 0) - a["by_status"].get("succeeded", 0)
            success = round(ok / done, 4) if done > 0 else None
        last = recent[-1] if recent else {"inflight": 0, "queued": 0}
        return {
            "executions_per_s": rate,
            "success_rate": success if success is not None else snap.get("success_rate"),
            "p50_ms": latency.get("p50_ms"), "p99_ms": latency.get("p99_ms"),
            "inflight": last["inflight"], "queued": last["queued"],
            "fee_used": snap.get("fee_used", 0), "executions": snap.get("executions", 0),
        }
