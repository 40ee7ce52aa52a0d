"""Building onnxruntime sessions and keeping a bounded number of them warm.

Session options are explicit: thread counts from config, spinning off by default,
sequential execution, the ONNX format forced (an ORT-format flatbuffer is never loaded by
sniffing), logging silenced (failures come back as exceptions; the terminate flag would
otherwise print an error line per timeout), and no custom op library, ever.

Memory cap: onnxruntime's CPU arena can be shared by sessions through an environment
allocator with an ``OrtArenaCfg`` ``max_mem``. Every session opts into it
(``session.use_env_allocators``), so an allocation past the cap fails that execution instead
of growing the process until the kernel kills it. Constant folding is off by default because
it computes at load time, outside that arena (config ``constant_folding``). The environment
allocator is process-wide: registering it again replaces it for sessions built afterwards, so
with several coordinators in one process the most recently opened one's cap applies to new
sessions.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import onnxruntime as ort

from coordinator_engine_onnxruntime.config import OnnxConfig
from coordinator_engine_onnxruntime.inputs import Signature
from coordinator_hookspecs import InvalidRequest

_SAME_AS_REQUESTED = 1  # arena extend strategy: grow by what is asked, not to a power of two


def install_memory_cap(cfg: OnnxConfig) -> None:
    """Register the shared CPU arena limited to ``cfg.max_memory_mb`` (0: leave ORT's own)."""
    if not cfg.max_memory_mb:
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                             ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(
        info, ort.OrtArenaCfg(cfg.max_memory_bytes, _SAME_AS_REQUESTED, -1, -1)
    )


def check_providers(cfg: OnnxConfig) -> None:
    """Refuse a config naming execution providers this onnxruntime build lacks."""
    available = ort.get_available_providers()
    missing = [p for p in cfg.providers if p not in available]
    if missing or not cfg.providers:
        raise InvalidRequest(
            f"invalid configuration: onnxruntime.providers {list(cfg.providers)} names "
            f"unavailable providers {missing}; this build has {available}"
        )


def session_options(cfg: OnnxConfig) -> ort.SessionOptions:
    """The options every session is built with (see the module docstring)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = cfg.intra_op_threads
    options.inter_op_num_threads = cfg.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.use_deterministic_compute = cfg.deterministic_compute
    options.log_severity_level = 4
    spin = "1" if cfg.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    options.add_session_config_entry("session.load_model_format", "ONNX")
    if cfg.max_memory_mb:
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def build_session(code: bytes, cfg: OnnxConfig) -> ort.InferenceSession:
    """A session for model bytes that passed the policy; ``InvalidRequest`` if onnxruntime
    cannot load them (an op or opset this build lacks, a graph it finds invalid)."""
    disabled = [] if cfg.constant_folding else ["ConstantFolding"]
    try:
        return ort.InferenceSession(code, session_options(cfg), providers=list(cfg.providers),
                                    disabled_optimizers=disabled)
    except Exception as exc:  # pybind raises Fail, InvalidGraph, NotImplemented, ...
        text = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else repr(exc)
        raise InvalidRequest(f"onnxruntime cannot load the model: {text}") from None


def _fast_run(session: ort.InferenceSession) -> Callable[..., Any]:
    """The binding's ``run`` under ``InferenceSession.run``.

    The public wrapper spends a sizeable share of a tiny model's run re-checking input
    names, which ``inputs.Signature`` has already done more strictly, and retrying on a
    provider failure with other providers, which we do not want: the configured providers
    are the ones that run, and an ``EPFail`` is reported as ``engine_error``. onnxruntime is
    pinned (==1.32.0), so the private attribute is stable; if a build lacks it, the public
    method is used.
    """
    inner = getattr(session, "_sess", None)
    return inner.run if inner is not None and callable(getattr(inner, "run", None)) \
        else session.run


class LoadedModel:
    """A warm session with what the hot path needs precomputed."""

    __slots__ = ("fee_fixed", "fee_scale", "meta", "nodes", "output_names", "run", "session",
                 "signature")

    def __init__(self, session: ort.InferenceSession, meta: dict[str, Any],
                 cfg: OnnxConfig) -> None:
        self.session = session
        self.run = _fast_run(session)
        self.meta = meta
        self.nodes: int = meta["node_count"]
        # The fee's model-dependent parts, so the hot path does one multiply-add.
        self.fee_fixed = cfg.fee_base + cfg.fee_per_node * self.nodes
        self.fee_scale = cfg.fee_per_1k_element_nodes * self.nodes
        self.output_names = [out["name"] for out in meta["outputs"]]
        self.signature = Signature(meta["inputs"])


class SessionCache:
    """Sessions by resource id, least recently used evicted past ``capacity``.

    A miss loads through ``loader(load_code())`` under a per-resource lock, so two threads
    missing the same model build it once. An evicted session still running on another thread
    stays alive until that run returns (it holds a reference).
    """

    def __init__(self, capacity: int, loader: Callable[[bytes], LoadedModel]) -> None:
        self.capacity = capacity
        self._loader = loader
        self._entries: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, resource_id: str, load_code: Callable[[], bytes]) -> LoadedModel:
        # Hit path without the lock: OrderedDict's get and move_to_end are single C calls,
        # atomic under the GIL; an eviction racing between them shows up as KeyError, and
        # the entry we hold stays valid for this execution.
        entry = self._entries.get(resource_id)
        if entry is not None:
            try:
                self._entries.move_to_end(resource_id)
            except KeyError:
                pass
            return entry
        with self._lock:
            gate = self._loading.setdefault(resource_id, threading.Lock())
        with gate:
            with self._lock:
                entry = self._entries.get(resource_id)
            if entry is None:
                try:
                    entry = self._loader(load_code())
                    self._put(resource_id, entry)
                finally:
                    with self._lock:
                        if self._loading.get(resource_id) is gate:
                            del self._loading[resource_id]
            return entry

    def _put(self, resource_id: str, entry: LoadedModel) -> None:
        with self._lock:
            self._entries[resource_id] = entry
            self._entries.move_to_end(resource_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def holds(self, resource_id: str) -> bool:
        with self._lock:
            return resource_id in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
