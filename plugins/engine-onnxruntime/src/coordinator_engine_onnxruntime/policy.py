"""The deploy-time model policy: what a model may contain before onnxruntime ever sees it.

``check_model`` runs, in order: the size cap and parse (``model.parse_model``), the operator
allowlist over every node onnxruntime could execute (subgraphs and model-local function bodies
included), the external data rule, ``onnx.checker``, and a static bound on tensor sizes
computed by shape inference. Malformed bytes raise ``InvalidRequest``; a policy
violation raises ``SecurityRejected`` naming the node, domain, tensor or limit.
``ModelPolicyValidator`` is the ``ValidatorRecord`` object: these checks plus a trial load; it
runs after the engine's ``inspect`` (which only parses) and before the bytes are stored.

Custom operator libraries are never registered (``SessionOptions.register_custom_ops_library``
is not called anywhere in this package), so a foreign domain could only execute through a
kernel onnxruntime ships (``com.microsoft`` contrib ops) or a model-local function: both are
refused unless their domain is allowlisted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto, TypeProto

from coordinator_engine_onnxruntime.config import OnnxConfig, normal_domain
from coordinator_engine_onnxruntime.external import check_external, embed_external
from coordinator_engine_onnxruntime.model import (
    NUMPY_DTYPES,
    iter_graphs,
    iter_nodes,
    iter_tensors,
    node_label,
    parse_model,
)
from coordinator_engine_onnxruntime.sessions import build_session
from coordinator_hookspecs import DeployRequest, InvalidRequest, SecurityRejected


def check_model(
    code: bytes, cfg: OnnxConfig, external_dir: Path | None
) -> tuple[ModelProto, bool]:
    """Every deploy-time check; returns the parsed model when it may be deployed, and
    whether external data (allowed and checked) was embedded into it."""
    model = parse_model(code, cfg.max_model_bytes)
    check_ops(model, cfg)
    # External references are settled before onnx.checker, which would otherwise look for
    # the files relative to the working directory.
    embedded = bool(check_external(iter_tensors(model), cfg.allow_external_data, external_dir,
                                   cfg.max_model_bytes - len(code))) and external_dir is not None
    if embedded and external_dir is not None:
        embed_external(iter_tensors(model), external_dir)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise InvalidRequest(f"onnx.checker refused the model: {_first_line(exc)}") from None
    if cfg.max_memory_mb:
        check_static_sizes(model, cfg.max_memory_bytes)
    return model, embedded


def check_ops(model: ModelProto, cfg: OnnxConfig) -> None:
    """Refuse any node or model-local function outside the allowed domains, and denied ops.

    A function's own domain matters, not only its body: a node calling ``evil:Op`` may run
    a kernel registered for that domain instead of the checked body, so the call itself must
    be in an allowed domain.
    """
    allowed = cfg.allowed_domains
    for function in model.functions:
        domain = normal_domain(function.domain)
        if domain not in allowed:
            raise SecurityRejected(
                f"model-local function '{function.name}' is in domain '{domain}', which is not "
                f"in onnxruntime.allowed_domains {sorted(allowed)}"
            )
    for where, node in iter_nodes(model):
        domain = normal_domain(node.domain)
        if domain not in allowed:
            raise SecurityRejected(
                f"node {node_label(node)} in {where} uses domain '{domain}', which is not in "
                f"onnxruntime.allowed_domains {sorted(allowed)}"
            )
        if node.op_type in cfg.denied_ops:
            raise SecurityRejected(
                f"node {node_label(node)} in {where} uses op '{node.op_type}', which is in "
                "onnxruntime.denied_ops"
            )


def _itemsize(elem_type: int) -> int:
    name = NUMPY_DTYPES.get(elem_type)
    if name is None:
        return 2 if elem_type in (onnx.TensorProto.BFLOAT16,) else 1
    return 8 if name == "string" else np.dtype(name).itemsize


def _static_bytes(tp: TypeProto) -> tuple[int, list[int]] | None:
    if tp.WhichOneof("value") != "tensor_type" or not tp.tensor_type.HasField("shape"):
        return None
    dims = tp.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    shape = [d.dim_value for d in dims]
    return math.prod(shape) * _itemsize(tp.tensor_type.elem_type), shape


def check_static_sizes(model: ModelProto, limit: int) -> None:
    """Refuse a model whose shape inference proves some tensor larger than ``limit`` bytes,
    e.g. ``ConstantOfShape`` of a constant ``[2**40]``: it could never run under the memory
    cap, and refusing it at deploy costs no execution anything."""
    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=False, strict_mode=False, data_prop=True
        )
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
        raise InvalidRequest(f"shape inference failed: {_first_line(exc)}") from None
    for where, graph in iter_graphs(inferred):
        producer = {out: node for node in graph.node for out in node.output}
        for info in (*graph.value_info, *graph.output):
            size = _static_bytes(info.type)
            if size is None or size[0] <= limit:
                continue
            node = producer.get(info.name)
            by = f" produced by node {node_label(node)}" if node is not None else ""
            raise SecurityRejected(
                f"tensor '{info.name}'{by} in {where} has static shape {size[1]}, "
                f"{size[0]} bytes, over the onnxruntime.max_memory_mb cap of {limit} bytes"
            )


class ModelPolicyValidator:
    """Refuses ONNX models that are malformed (``InvalidRequest``) or break the policy
    (``SecurityRejected``: size, domains, denied ops, external data, static tensor size)."""

    def __init__(self, cfg: OnnxConfig, external_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.external_dir = external_dir if cfg.allow_external_data else None

    def validate_deploy(self, deploy: DeployRequest) -> None:
        """Admit (return None) or raise; see ``policy.check_model`` for the order of checks."""
        if deploy.resource_type != "onnx":
            return None
        model, embedded = check_model(deploy.code, self.cfg, self.external_dir)
        if self.cfg.verify_load_at_deploy:
            # Every check passed, so onnxruntime may now see the bytes: a model it cannot load
            # (an op or opset this build lacks) is refused at deploy, not at first use. The
            # session is dropped; the engine builds its own on first execution.
            build_session(model.SerializeToString() if embedded else bytes(deploy.code),
                          self.cfg)
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
