"""Models deployed with options: their instances, their batcher, and one execution on them.

An execution of such a model stays its own execution: its inputs are checked and its fee
limit, security and quota decided before it is queued (the pipeline did the latter two), and
it ends with its own output or error, its own fee and its own audit record. What it shares
with the other members of its batch is one ``sess.run``:

- **merge and split**: the members' inputs are concatenated along the first axis, run once,
  and every output is sliced back by each member's rows. An output whose first dimension is
  not the total of rows cannot be split: the batch is then retried request by request.
- **a failing batch** (an exception from onnxruntime) is retried request by request, so one
  bad input fails only itself; the others get exactly what they would have got alone.
- **a request that does not fit** (rows over ``max_batch_size``, inputs disagreeing on their
  rows) runs alone on an instance, on the caller's thread; one whose shapes past the batch
  axis differ from the others' waits for a batch of its own kind.
- **fee**: a batch of total input elements E would cost
  ``F = fee_base + fee_per_node * nodes + ceil(fee_per_1k_element_nodes * E * nodes / 1000)``
  as one execution; each member pays its share, ``ceil(F * e / E)`` for its e elements, and
  never more than it would alone. The fee limit is checked against the fee alone (an upper
  bound) before queuing. A request run alone pays the fee alone.
- **queue time and compute time** are recorded per model (``batchstats.py``).

Without batching, ``instances`` sessions serve the model's executions in turn (each call
takes the next), with the intra-op threads divided between them (``options.intra_threads``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import onnxruntime as ort

from coordinator_engine_onnxruntime.batcher import Batcher, BatchRun, Pending
from coordinator_engine_onnxruntime.batchstats import BatchStats
from coordinator_engine_onnxruntime.cli_io import as_mapping
from coordinator_engine_onnxruntime.options import ServingOptions, intra_threads
from coordinator_engine_onnxruntime.sessions import LoadedModel
from coordinator_hookspecs import (
    CoordinatorError,
    EngineResult,
    ErrorKind,
    ExecutionContext,
    FeeExhausted,
    Timeout,
)

#: ``stopped(reason, fee, when)``: the Cancelled/Timeout error of engine.py.
Stopped = Callable[[ErrorKind, int, str], CoordinatorError]
#: ``failure(exc, reason, fee)``: an onnxruntime run error as an error kind (engine.py).
Failure = Callable[[Exception, ErrorKind | None, int], CoordinatorError]


def fee_for(model: LoadedModel, elements: int) -> int:
    """The engine's fee formula for one run over ``elements`` input elements."""
    return model.fee_fixed + -(-model.fee_scale * elements // 1000)


class Served:
    """One model deployed with options (see the module docstring)."""

    def __init__(self, resource_id: str, options: ServingOptions, instances: list[LoadedModel],
                 terminate: Callable[[ort.RunOptions], Any], stopped: Stopped,
                 failure: Failure) -> None:
        self.resource_id = resource_id
        self.options = options
        self.instances = instances
        self.model = instances[0]  # signature, output names and fee are the same in each
        self.stats = BatchStats()
        self._terminate = terminate
        self._stopped = stopped
        self._failure = failure
        self._turn = itertools.count()
        self._timeout = options.queue_timeout_us / 1e6 or None
        self.batcher = (Batcher(options, instances, self._run_batch, resource_id[:12])
                        if options.batching else None)

    # -- one execution -------------------------------------------------------------------------
    def execute(self, ctx: ExecutionContext) -> EngineResult:
        model = self.model
        given = ctx.request.input
        feeds, elements = model.signature.bind(given if type(given) is dict
                                               else as_mapping(given))
        alone = fee_for(model, elements)
        if alone > ctx.fee_limit:
            raise FeeExhausted(
                f"running this model on {elements} input elements costs {alone}, over the "
                f"fee limit of {ctx.fee_limit}", fee_used=0)
        token = ctx.token
        if token.poll() is not None:
            raise self._stopped(token.reason or ErrorKind.CANCELLED, 0, "before it started")
        rows = self._rows(feeds)
        batcher = self.batcher
        if batcher is None or rows is None:
            instance = self.instances[next(self._turn) % len(self.instances)]
            outputs = self._run_alone(instance, feeds, token, alone)
            return EngineResult(output=dict(zip(model.output_names, outputs, strict=True)),
                                fee_used=alone)
        item = Pending(feeds, rows, tuple((a.shape[1:], a.dtype.str) for a in feeds.values()),
                       elements, token)
        item.fee = alone
        batcher.put(item)
        token.on_cancel(batcher.on_cancel(
            item, lambda reason: self._stopped(reason, 0, "while queued for a batch")))
        if not item.wait(self._timeout):
            if batcher.withdraw(item):
                raise Timeout(f"the request waited in the model's batch queue longer than "
                              f"queue_timeout_us ({self.options.queue_timeout_us})",
                              fee_used=0)
            item.wait()
        if item.error is not None:
            raise item.error
        if token.reason is not None:
            raise self._stopped(token.reason, item.fee, "while its batch ran (the output is "
                                "discarded)")
        assert item.outputs is not None
        return EngineResult(output=dict(zip(model.output_names, item.outputs, strict=True)),
                            fee_used=item.fee)

    def _rows(self, feeds: dict[str, np.ndarray]) -> int | None:
        """The request's rows on the batch axis, or None when it must run alone."""
        rows = None
        for array in feeds.values():
            if rows is None:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                return None
        if rows is None or not 1 <= rows <= self.options.max_batch_size:
            return None
        return rows

    def _run_alone(self, instance: LoadedModel, feeds: dict[str, np.ndarray], token: Any,
                   fee: int) -> list[Any]:
        options = ort.RunOptions()
        token.on_cancel(self._terminate(options))
        started = time.perf_counter()
        try:
            outputs: list[Any] = instance.run(instance.output_names, feeds, options)
        except Exception as exc:  # pybind raises Fail, InvalidArgument, RuntimeException...
            raise self._failure(exc, token.reason, fee) from None
        finally:
            self.stats.ran_alone(time.perf_counter() - started)
        if token.reason is not None:
            raise self._stopped(token.reason, fee, "while running (the last kernel finished "
                                "after it; the output is discarded)")
        return outputs

    # -- one batch (on a runner thread) --------------------------------------------------------
    def _run_batch(self, instance: LoadedModel, run: BatchRun) -> None:
        items = run.items
        names = [spec.name for spec in instance.signature.specs]
        merged = feeds_of(items, names)
        total = sum(item.rows for item in items)
        started = time.perf_counter()
        try:
            outputs = instance.run(instance.output_names, merged, run.options)
        except Exception:  # retried one by one below: each gets its own error
            outputs = None
        compute = time.perf_counter() - started
        if outputs is None or not all(isinstance(o, np.ndarray) and o.ndim and
                                      o.shape[0] == total for o in outputs):
            self.stats.retry()
            for item in items:
                self._retry_alone(instance, item)
            return
        self.stats.batch(len(items), total, [item.started - item.enqueued for item in items],
                         compute)
        elements = sum(item.elements for item in items)
        whole = fee_for(instance, elements)
        offset = 0
        for item in items:
            end = offset + item.rows
            share = -(-whole * item.elements // elements) if elements else whole
            item.finish([o[offset:end] for o in outputs], min(share, item.fee))
            offset = end

    def _retry_alone(self, instance: LoadedModel, item: Pending) -> None:
        if item.token.reason is not None:
            item.finish(None, item.fee, self._stopped(item.token.reason, item.fee,
                                                      "while its batch ran"))
            return
        try:
            outputs = self._run_alone(instance, item.feeds, item.token, item.fee)
        except CoordinatorError as exc:
            item.finish(None, item.fee, exc)
            return
        item.finish(outputs, item.fee)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def snapshot(self) -> dict[str, Any]:
        options = attrs.asdict(self.options)
        options["preferred_batch_sizes"] = list(self.options.preferred_batch_sizes)
        return {"options": options, "instances": len(self.instances),
                "queued": self.batcher.queued() if self.batcher is not None else 0,
                **self.stats.snapshot()}


def feeds_of(items: list[Pending], names: list[str]) -> dict[str, np.ndarray]:
    """The members' inputs concatenated along the batch axis.

    Joined as bytes, not with ``np.concatenate``: numpy releases the GIL while it copies
    arrays of more than a few hundred elements, and the runner thread, once it has let go,
    waits for it behind every caller its last batch released (a convoy: 1.7 ms to merge 30
    rows of 640 floats, more than the batch's ``sess.run``; joining bytes takes 30 us and
    doubled the batched throughput in ``bench/bench_batching.py``). Object (string) tensors
    hold pointers, so they are concatenated by numpy."""
    if len(items) == 1:
        return items[0].feeds
    merged: dict[str, np.ndarray] = {}
    for name in names:
        first = items[0].feeds[name]
        if first.dtype.hasobject:
            merged[name] = np.concatenate([item.feeds[name] for item in items])
        else:
            joined = b"".join([item.feeds[name].tobytes() for item in items])
            merged[name] = np.frombuffer(joined, first.dtype).reshape((-1, *first.shape[1:]))
    return merged


class ServedModels:
    """The ``Served`` models of an engine by resource id, least recently used closed past
    ``capacity`` (the session cache's size)."""

    def __init__(self, capacity: int,
                 build: Callable[[ExecutionContext, ServingOptions], Served]) -> None:
        self.capacity = capacity
        self._build = build
        self._models: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ctx: ExecutionContext) -> Served:
        rid = ctx.resource.id
        served = self._models.get(rid)
        if served is not None:
            try:  # a single C call, atomic under the GIL (as in SessionCache.get)
                self._models.move_to_end(rid)
            except KeyError:
                pass
            return served
        with self._lock:  # building sessions is rare and slow; one at a time is fine
            served = self._models.get(rid)
            if served is None:
                served = self._build(ctx, ServingOptions.of(ctx.resource.meta["options"]))
                self._models[rid] = served
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)[1].close()
            else:
                self._models.move_to_end(rid)
        return served

    def holds(self, resource_id: str) -> bool:
        return resource_id in self._models

    def stats(self) -> dict[str, Any]:
        with self._lock:
            models = list(self._models.values())
        return {m.resource_id: m.snapshot() for m in models}

    def close(self) -> None:
        with self._lock:
            models, self._models = list(self._models.values()), OrderedDict()
        for served in models:
            served.close()


def build_instances(load: Callable[[bytes, Any], LoadedModel], code: bytes, cfg: Any,
                    options: ServingOptions) -> list[LoadedModel]:
    """``options.instances`` sessions of the model, the intra-op threads divided among them."""
    threads = intra_threads(cfg.intra_op_threads, options.instances)
    each = attrs.evolve(cfg, intra_op_threads=threads)
    return [load(code, each) for _ in range(options.instances)]
