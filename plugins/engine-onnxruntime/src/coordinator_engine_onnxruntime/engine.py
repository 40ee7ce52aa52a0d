"""The ONNX engine: cached sessions, checked inputs, a deterministic fee, cancellable runs.

Cancel and deadline
-------------------
onnxruntime stops a run when its ``RunOptions.terminate`` flag is set; the flag is checked
between kernels (and between Loop/Scan iterations), never inside one. The engine registers a
callback on the execution's ``CancelToken`` that sets the flag; the core's watchdog cancels
the token at the deadline (reason ``timeout``) and ``Coordinator.cancel`` does so with reason
``cancelled``. The run then fails with a "terminate flag" error, which the engine reports as
``Timeout`` or ``Cancelled`` by ``token.reason``, charging the fee (the run had started).

A single huge kernel (a MatMul of two large matrices) is not interrupted: the execution
overruns its deadline until that kernel returns (the calling thread, and any quota the
execution holds, stay busy meanwhile), then ends as ``timed_out`` all the same: a run that
completes after its token was cancelled is reported by ``token.reason`` and its output
discarded. The memory cap bounds how large one kernel's tensors can be, and the fee grows with
input size, which bounds the overrun without removing it (docs/onnx.md).

Which run call
--------------
``sess.run(names, feeds, run_options)`` costs the same as without options (the pybind call is
identical, ``None`` or an object), and building a ``RunOptions()`` is cheap;
``run_with_ort_values`` and ``run_with_iobinding`` are several times slower, as they wrap every
input and output in an ``OrtValue`` (``bench/results.md``, the onnx rows). So the engine calls
the plain ``InferenceSession.run`` with a **fresh RunOptions per execution**. Reusing one per
thread would save building it, but a cancel arriving just after
an execution finished would then set the flag during the *next* execution on that thread;
a fresh object makes a late callback harmless (it flips a flag nobody reads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from coordinator_engine_onnxruntime.cli_io import as_mapping, decode_cli_input, encode_output
from coordinator_engine_onnxruntime.config import OnnxConfig
from coordinator_engine_onnxruntime.external import check_external, embed_external
from coordinator_engine_onnxruntime.model import iter_tensors, parse_model, signature
from coordinator_engine_onnxruntime.options import ServingOptions, check_options
from coordinator_engine_onnxruntime.policy import check_ops
from coordinator_engine_onnxruntime.serving import Served, ServedModels, build_instances
from coordinator_engine_onnxruntime.sessions import (
    LoadedModel,
    SessionCache,
    build_session,
    check_providers,
    install_memory_cap,
)
from coordinator_engine_onnxruntime.usage import tensor_use
from coordinator_hookspecs import (
    Cancelled,
    CoordinatorError,
    DeployRequest,
    EngineError,
    EngineResult,
    ErrorKind,
    ExecutionContext,
    FeeExhausted,
    InvalidRequest,
    Timeout,
    Trap,
)

_NO_MEMORY = ("Failed to allocate memory", "Available memory of")


class _Terminate:
    """The token callback: set the run's terminate flag (quick and thread-safe, as
    ``CancelToken.on_cancel`` requires)."""

    __slots__ = ("options",)

    def __init__(self, options: ort.RunOptions) -> None:
        self.options = options

    def __call__(self, _reason: ErrorKind) -> None:
        self.options.terminate = True


def _stopped(reason: ErrorKind, fee: int, when: str) -> CoordinatorError:
    if reason is ErrorKind.TIMEOUT:
        return Timeout(f"the model passed its deadline {when}", fee_used=fee)
    return Cancelled(f"the execution was cancelled {when}", fee_used=fee)


class OnnxEngine:
    """Runs ``onnx`` resources with onnxruntime (see the module docstring)."""

    def __init__(self, cfg: OnnxConfig, external_dir: Path | None = None) -> None:
        check_providers(cfg)
        install_memory_cap(cfg)
        self.cfg = cfg
        self.external_dir = external_dir if cfg.allow_external_data else None
        self.sessions = SessionCache(cfg.session_cache_size, self._load)
        self.served = ServedModels(cfg.session_cache_size, self._serve)
        self._closed = False

    # -- deploy ------------------------------------------------------------------------------
    def inspect(self, deploy: DeployRequest) -> dict[str, Any]:
        """The model's signature and node count as JSON-compatible meta.

        Runs before the deploy validators, so it only parses (size cap first) and reads the
        graph; it never hands the bytes to onnxruntime.
        """
        meta = signature(parse_model(deploy.code, self.cfg.max_model_bytes))
        asked = getattr(deploy, "options", None)
        if asked:
            meta["options"] = check_options(asked, meta)
        return meta

    def _serve(self, ctx: ExecutionContext, options: ServingOptions) -> Served:
        """The instances (and batcher) of a model deployed with options (serving.py)."""
        instances = build_instances(self._load, ctx.load_code(), self.cfg, options)
        return Served(ctx.resource.id, options, instances, _Terminate, _stopped, self._failure)

    def _load(self, code: bytes, cfg: OnnxConfig | None = None) -> LoadedModel:
        # The store only holds models the validator admitted, but the op and external-data
        # rules are re-checked here: config may have tightened since, or the validator may be
        # switched off, and these two rules guard the host rather than the caller.
        model = parse_model(code, self.cfg.max_model_bytes)
        check_ops(model, self.cfg)
        budget = self.cfg.max_model_bytes - len(code)
        if check_external(iter_tensors(model), self.cfg.allow_external_data, self.external_dir,
                          budget) and self.external_dir is not None:
            embed_external(iter_tensors(model), self.external_dir)
            code = model.SerializeToString()
        cfg = cfg or self.cfg
        return LoadedModel(build_session(code, cfg), signature(model), cfg)

    # -- execution ---------------------------------------------------------------------------
    def fee(self, nodes: int, elements: int) -> int:
        """base + per_node * nodes + ceil(per_1k_element_nodes * elements * nodes / 1000)."""
        cfg = self.cfg
        scaled = cfg.fee_per_1k_element_nodes * elements * nodes
        return cfg.fee_base + cfg.fee_per_node * nodes + -(-scaled // 1000)

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        """Check inputs, charge the fee, run once with a terminate-able ``RunOptions``."""
        if self._closed:
            raise EngineError("the onnxruntime engine is closed")
        if ctx.resource.meta.get("options"):  # batching or instances: serving.py
            return self.served.get(ctx).execute(ctx)
        entry = self.sessions.get(ctx.resource.id, ctx.load_code)
        given = ctx.request.input
        feeds, elements = entry.signature.bind(
            given if type(given) is dict else as_mapping(given)
        )
        fee = entry.fee_fixed + -(-entry.fee_scale * elements // 1000)  # == self.fee(...)
        if fee > ctx.fee_limit:
            raise FeeExhausted(
                f"running this model on {elements} input elements costs {fee}, over the fee "
                f"limit of {ctx.fee_limit}", fee_used=0)
        token = ctx.token
        if token.poll() is not None:
            raise _stopped(token.reason or ErrorKind.CANCELLED, 0, "before it started")
        options = ort.RunOptions()
        token.on_cancel(_Terminate(options))
        try:
            outputs = entry.run(entry.output_names, feeds, options)
        except Exception as exc:  # pybind raises Fail, InvalidArgument, RuntimeException...
            raise self._failure(exc, token.reason, fee) from None
        if token.reason is not None:
            # The flag was set but no check came before the run ended (one long kernel): the
            # deadline or cancel still decides, so the status matches what the caller asked.
            raise _stopped(token.reason, fee, "while running (the last kernel finished after "
                           "it; the output is discarded)")
        memory, usage = tensor_use(feeds, outputs)
        return EngineResult(output=dict(zip(entry.output_names, outputs, strict=True)),
                            fee_used=fee, memory_bytes=memory, usage=usage)

    @staticmethod
    def _failure(exc: Exception, reason: ErrorKind | None, fee: int) -> CoordinatorError:
        """Map an onnxruntime run error to an error kind.

        A set token wins: the failure is the terminate flag taking effect. An allocation over
        the memory cap is a ``trap`` (the model hit a limit, as a wasm guest hitting its memory
        limit does); so is any other kernel failure, which comes from the model and its
        inputs. ``InvalidArgument`` means the inputs do not fit the model in a way the
        signature could not show (a runtime shape mismatch): ``invalid_request``. Anything
        else (a provider failure) is the engine's: ``engine_error``.
        """
        if reason is not None:
            return _stopped(reason, fee, "while running (onnxruntime terminated the run)")
        text = " ".join(str(exc).split())[:600] or type(exc).__name__
        if any(marker in text for marker in _NO_MEMORY):
            return Trap(f"the model exceeded the memory cap: {text}", fee_used=fee)
        if isinstance(exc, InvalidArgument):
            return InvalidRequest(f"onnxruntime refused the inputs: {text}", fee_used=fee)
        name = type(exc).__name__
        if name in ("Fail", "RuntimeException"):
            return Trap(f"the model failed at run time: {text}", fee_used=fee)
        return EngineError(f"onnxruntime failed ({name}): {text}", fee_used=fee)

    # -- CLI helpers, lifecycle -----------------------------------------------------------------
    #: JSON text or .npz bytes -> input mapping (called by the core CLI when present).
    decode_cli_input = staticmethod(decode_cli_input)
    #: Output mapping -> JSON-compatible value (called by the core CLI when present).
    encode_output = staticmethod(encode_output)

    def holds(self, resource_id: str) -> bool:
        """True when the model's session is warm (affinity scheduling)."""
        return self.sessions.holds(resource_id) or self.served.holds(resource_id)

    def model_stats(self) -> dict[str, Any]:
        """Batch sizes, queue and compute time of each model deployed with options."""
        return self.served.stats()

    def health(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Drop every session and stop every batcher; later executions fail with
        ``engine_error``."""
        self._closed = True
        self.served.close()
        self.sessions.clear()
