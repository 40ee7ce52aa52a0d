"""Per-model deploy options: dynamic batching and model instances.

``deploy(model, "onnx", options={...})`` (CLI ``--option KEY=VALUE``) takes these keys, named
after Triton's ``dynamic_batching`` settings where one exists:

- ``max_batch_size`` (int >= 1, default 1 = no batching): most rows merged into one run;
- ``preferred_batch_sizes`` (ints in 1..max_batch_size): a batch is run as soon as its rows
  reach one of these (or pass the largest), cut to the largest of them that fits;
- ``max_queue_delay_us`` (int >= 0, default 0): how long the oldest queued request waits for
  others before its batch runs anyway;
- ``max_queue_size`` (int >= 0, default 0 = unbounded): requests queued at most; one more
  fails at once as ``quota_exceeded``;
- ``queue_timeout_us`` (int >= 0, default 0 = none): a request still queued after this long
  fails as ``timeout`` (fee 0) and leaves the queue;
- ``instances`` (int >= 1, default 1): sessions of the model, each run by its own thread;
  each session gets ``min(intra_op_threads, cores // instances)`` intra-op threads (at least
  one), so instances x threads stay within the cores.

The batching keys other than ``max_batch_size`` need ``max_batch_size > 1``. Batching needs
a batch axis: the first dimension of every input and every output must be symbolic
(``["N", 4]``); otherwise the options are refused at deploy, naming the tensor and its
shape. Every refusal is ``invalid_request`` naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from coordinator_hookspecs import InvalidRequest

_INTS = ("max_batch_size", "max_queue_delay_us", "max_queue_size", "queue_timeout_us",
         "instances")
_MINIMUM = {"max_batch_size": 1, "instances": 1}
KEYS = (*_INTS, "preferred_batch_sizes")
_BATCH_ONLY = ("preferred_batch_sizes", "max_queue_delay_us", "max_queue_size",
               "queue_timeout_us")


@attrs.frozen
class ServingOptions:
    """A model's checked deploy options (see the module docstring for each)."""

    max_batch_size: int = 1
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    max_queue_size: int = 0
    queue_timeout_us: int = 0
    instances: int = 1

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> ServingOptions:
        """From stored (already checked) options."""
        given = dict(options)
        if "preferred_batch_sizes" in given:
            given["preferred_batch_sizes"] = tuple(given["preferred_batch_sizes"])
        return cls(**{k: v for k, v in given.items() if k in KEYS})


def _int(key: str, value: Any) -> int:
    if type(value) is not int:
        raise InvalidRequest(f"deploy option {key!r} must be an integer, got "
                             f"{type(value).__name__} {value!r}")
    if value < _MINIMUM.get(key, 0):
        raise InvalidRequest(f"deploy option {key!r} must be at least "
                             f"{_MINIMUM.get(key, 0)}, got {value}")
    return value


def check_options(options: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The options normalised for storage, or ``InvalidRequest`` naming the bad key; ``meta``
    is the model's signature (``model.signature``), for the batch axis."""
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise InvalidRequest(f"unknown deploy option {', '.join(map(repr, unknown))} for an "
                             f"onnx model; it takes {', '.join(KEYS)}")
    out: dict[str, Any] = {}
    for key in _INTS:
        if key in options:
            out[key] = _int(key, options[key])
    largest = out.get("max_batch_size", 1)
    if "preferred_batch_sizes" in options:
        sizes = options["preferred_batch_sizes"]
        if not isinstance(sizes, list | tuple) or not sizes:
            raise InvalidRequest("deploy option 'preferred_batch_sizes' must be a non-empty "
                                 f"list of integers, got {sizes!r}")
        for size in sizes:
            if type(size) is not int or not 1 <= size <= largest:
                raise InvalidRequest(f"deploy option 'preferred_batch_sizes' holds {size!r}; "
                                     f"each must be an integer in 1..max_batch_size "
                                     f"({largest})")
        out["preferred_batch_sizes"] = sorted(set(sizes))
    if largest == 1:
        needing = [k for k in _BATCH_ONLY if k in out]
        if needing:
            raise InvalidRequest(f"deploy option {needing[0]!r} needs max_batch_size > 1")
    cores = os.cpu_count() or 1
    if out.get("instances", 1) > cores:
        raise InvalidRequest(f"deploy option 'instances' is {out['instances']}, more than the "
                             f"{cores} cores (each instance needs at least one thread)")
    if largest > 1:
        problem = batch_axis_problem(meta)
        if problem:
            raise InvalidRequest(f"deploy option 'max_batch_size' refused: {problem}")
    return out


def batch_axis_problem(meta: Mapping[str, Any]) -> str | None:
    """Why the model cannot batch along its first dimension, or None when it can."""
    if not meta.get("inputs"):
        return "the model has no inputs to batch"
    for kind in ("inputs", "outputs"):
        for spec in meta[kind]:
            shape = spec["shape"]
            if spec["dtype"].startswith(("seq(", "map(", "optional(", "sparse_tensor(")):
                return (f"{kind[:-1]} '{spec['name']}' is a {spec['dtype']}, not a tensor, so "
                        "it has no batch axis")
            if shape is None:
                return (f"{kind[:-1]} '{spec['name']}' has an unknown rank, so its first "
                        "dimension cannot be the batch axis")
            if not shape:
                return f"{kind[:-1]} '{spec['name']}' is a scalar, so it has no batch axis"
            if isinstance(shape[0], int):
                return (f"{kind[:-1]} '{spec['name']}' has the fixed first dimension "
                        f"{shape[0]} (shape {shape}); batching needs a symbolic first "
                        "dimension")
    return None


def intra_threads(configured: int, instances: int) -> int:
    """Intra-op threads of each of ``instances`` sessions: instances x threads <= cores."""
    cores = os.cpu_count() or 1
    return max(1, min(configured, cores // instances))
