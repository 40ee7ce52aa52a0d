"""Reading a model: parse its bytes, walk every graph it holds, describe its signature.

The walkers visit what onnxruntime would execute, not only the main graph: subgraphs held in
any graph-valued attribute (If branches, Loop and Scan bodies, and any future op's), the
bodies of model-local functions, and the graphs of ``training_info``. They use an explicit
stack, so a deeply nested model cannot exhaust Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto

from coordinator_hookspecs import InvalidRequest, SecurityRejected

#: ONNX element types numpy (and onnxruntime's Python binding) can feed, by numpy name.
NUMPY_DTYPES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
    TensorProto.INT8: "int8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.UINT8: "uint8",
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
    TensorProto.STRING: "string",
}

Dim = int | str | None


def parse_model(code: bytes, max_bytes: int) -> ModelProto:
    """Parse ``code`` as an ONNX ``ModelProto`` after the size cap.

    Raises ``SecurityRejected`` past the cap (a policy limit) and ``InvalidRequest`` for
    bytes that are not a model (the message names the protobuf error or the missing graph).
    """
    if not isinstance(code, bytes | bytearray | memoryview):
        raise InvalidRequest(f"an ONNX model must be bytes, got {type(code).__name__}")
    if len(code) > max_bytes:
        raise SecurityRejected(
            f"model is {len(code)} bytes, over the onnxruntime.max_model_bytes limit of "
            f"{max_bytes}"
        )
    model = ModelProto()
    try:
        model.ParseFromString(bytes(code))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidRequest(f"not a valid ONNX model: protobuf parse failed ({exc})") from None
    if not model.HasField("graph"):
        raise InvalidRequest("not a valid ONNX model: it has no graph")
    return model


def _attribute_graphs(node: NodeProto) -> Iterator[tuple[str, GraphProto]]:
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH or attr.HasField("g"):
            yield attr.name, attr.g
        for i, graph in enumerate(attr.graphs):
            yield f"{attr.name}[{i}]", graph


def node_label(node: NodeProto) -> str:
    """How a node is named in messages: ``'name' (domain:OpType)``."""
    name = node.name or (node.output[0] if node.output else "")
    return f"'{name}' ({node.domain or 'ai.onnx'}:{node.op_type})"


def iter_graphs(model: ModelProto) -> Iterator[tuple[str, GraphProto]]:
    """Every graph of the model with a readable path: main, subgraphs, training graphs,
    and the subgraphs inside model-local function bodies."""
    stack: list[tuple[str, GraphProto]] = [(f"graph '{model.graph.name}'", model.graph)]
    for i, info in enumerate(model.training_info):
        stack.append((f"training_info[{i}].initialization", info.initialization))
        stack.append((f"training_info[{i}].algorithm", info.algorithm))
    for function in model.functions:
        where = f"function '{function.domain}:{function.name}'"
        for node in function.node:
            stack.extend((f"{where} > node {node_label(node)} > {n}", g)
                         for n, g in _attribute_graphs(node))
    while stack:
        where, graph = stack.pop()
        yield where, graph
        for node in graph.node:
            stack.extend((f"{where} > node {node_label(node)} > {n}", g)
                         for n, g in _attribute_graphs(node))


def iter_nodes(model: ModelProto) -> Iterator[tuple[str, NodeProto]]:
    """Every node onnxruntime could execute, with the path of the graph or function holding it."""
    for where, graph in iter_graphs(model):
        for node in graph.node:
            yield where, node
    for function in model.functions:
        for node in function.node:
            yield f"function '{function.domain}:{function.name}'", node


def iter_tensors(model: ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """Every tensor stored in the model: initializers (dense and sparse) of every graph and
    tensor-valued attributes of every node (``Constant``, ``ConstantOfShape``...)."""
    for where, graph in iter_graphs(model):
        for tensor in graph.initializer:
            yield f"{where} > initializer '{tensor.name}'", tensor
        for sparse in graph.sparse_initializer:
            yield f"{where} > sparse initializer", sparse.values
            yield f"{where} > sparse initializer", sparse.indices
    for where, node in iter_nodes(model):
        for attr in node.attribute:
            label = f"{where} > node {node_label(node)} > attribute {attr.name}"
            if attr.HasField("t"):
                yield label, attr.t
            yield from ((label, t) for t in attr.tensors)
            if attr.HasField("sparse_tensor"):
                yield label, attr.sparse_tensor.values
                yield label, attr.sparse_tensor.indices
            for sparse in attr.sparse_tensors:
                yield label, sparse.values
                yield label, sparse.indices


def node_count(model: ModelProto) -> int:
    """Nodes of every graph, subgraph and function body: the size the fee is based on."""
    return sum(1 for _ in iter_nodes(model))


def type_string(tp: TypeProto) -> str:
    """onnxruntime's spelling of a non-tensor type: ``seq(map(int64,tensor(float)))``."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({elem_name(tp.tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({type_string(tp.sequence_type.elem_type)})"
    if kind == "map_type":
        key = elem_name(tp.map_type.key_type)
        return f"map({key},{type_string(tp.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({type_string(tp.optional_type.elem_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse_tensor({elem_name(tp.sparse_tensor_type.elem_type)})"
    return "unknown"


def elem_name(elem_type: int) -> str:
    """numpy name of an element type when numpy has one, else ONNX's name in lower case."""
    if elem_type in NUMPY_DTYPES:
        return NUMPY_DTYPES[elem_type]
    try:
        return str(TensorProto.DataType.Name(elem_type)).lower()
    except ValueError:
        return f"type{elem_type}"


def value_spec(info: onnx.ValueInfoProto) -> dict[str, Any]:
    """One input or output as JSON: name, dtype (numpy name, or a type string for
    sequences/maps), shape (ints for fixed dims, strings for symbolic ones, None for unnamed
    dims; None for the whole shape when the rank is unknown)."""
    tp = info.type
    if tp.WhichOneof("value") != "tensor_type":
        return {"name": info.name, "dtype": type_string(tp), "shape": None}
    tensor = tp.tensor_type
    shape: list[Dim] | None = None
    if tensor.HasField("shape"):
        shape = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor.shape.dim
        ]
    return {"name": info.name, "dtype": elem_name(tensor.elem_type), "shape": shape}


def signature(model: ModelProto) -> dict[str, Any]:
    """The meta dict ``inspect`` returns: inputs a caller must feed (graph inputs that are
    not initializers), outputs, node count, opsets; JSON-compatible."""
    initialized = {t.name for t in model.graph.initializer}
    return {
        "inputs": [value_spec(i) for i in model.graph.input if i.name not in initialized],
        "outputs": [value_spec(o) for o in model.graph.output],
        "node_count": node_count(model),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
