"""Prometheus families of the models an engine serves with deploy options (batching,
instances), read at scrape time from ``metrics()["engines"][engine]["models"]``.

- ``coordinator_model_batch_size{engine, resource_id}``: histogram of requests per batch
  (buckets at powers of two; a request run alone counts as a batch of one);
- ``coordinator_model_queue_duration_seconds{engine, resource_id}``: summary (count, sum) of
  the time requests waited in the batch queue;
- ``coordinator_model_compute_duration_seconds{engine, resource_id}``: summary of the time
  of each ``sess.run`` (one per batch);
- ``coordinator_model_queued{engine, resource_id}``: requests queued now.

Queue and compute are apart as Triton's ``queue_duration`` and ``compute_infer_duration``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric

#: Upper bounds of the batch size buckets (``+Inf`` follows).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _size_buckets(sizes: Mapping[str, int]) -> list[tuple[str, float]]:
    counts = {int(size): n for size, n in sizes.items()}
    out: list[tuple[str, float]] = []
    for bound in BATCH_BUCKETS:
        out.append((str(float(bound)), float(sum(n for s, n in counts.items() if s <= bound))))
    out.append(("+Inf", float(sum(counts.values()))))
    return out


def model_families(engines: Mapping[str, Any]) -> Iterator[Metric]:
    """The four families above for every engine reporting ``models``."""
    from prometheus_client.core import (
        GaugeMetricFamily,
        HistogramMetricFamily,
        SummaryMetricFamily,
    )

    labels = ["engine", "resource_id"]
    size = HistogramMetricFamily("coordinator_model_batch_size",
                                 "Requests per batch of a model served with batching.",
                                 labels=labels)
    queue = SummaryMetricFamily("coordinator_model_queue_duration_seconds",
                                "Time requests waited in a model's batch queue.",
                                labels=labels)
    compute = SummaryMetricFamily("coordinator_model_compute_duration_seconds",
                                  "Time of each run (one per batch) of a model.",
                                  labels=labels)
    queued = GaugeMetricFamily("coordinator_model_queued",
                               "Requests waiting in a model's batch queue now.", labels=labels)
    for engine, entry in engines.items():
        for rid, model in (entry.get("models") or {}).items():
            key = [engine, rid]
            size.add_metric(key, _size_buckets(model["batch_sizes"]),
                            float(model["requests"]))
            queue.add_metric(key, model["queue"]["count"], model["queue"]["sum_seconds"])
            compute.add_metric(key, model["compute"]["count"], model["compute"]["sum_seconds"])
            queued.add_metric(key, model["queued"])
    yield from (size, queue, compute, queued)
