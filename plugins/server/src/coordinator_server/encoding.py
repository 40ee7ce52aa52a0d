"""JSON forms of resources, results and statuses for the contract API.

A failed execution's ``error`` is its message and ``error_kind`` its kind, so every error
body of the service has the same ``{"error": "..."}`` shape. Bytes (a contract's output, a
state value) are base64; a model's output arrays are nested lists through the engine's own
``encode_output`` when it has one.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from coordinator_hookspecs import ExecutionResult, ResourceInfo


def resource_json(info: ResourceInfo, meta: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "resource_id": info.id, "type": info.type, "name": info.name, "owner": info.owner,
        "size": info.size, "capabilities": sorted(info.capabilities),
        "deployed_at": info.deployed_at, "options": dict(info.meta.get("options") or {}),
    }
    if meta:
        data["meta"] = dict(info.meta)
    return data


def output_json(coord: Any, result: ExecutionResult) -> dict[str, Any]:
    output = result.output
    if output is None:
        return {"output": None}
    if isinstance(output, bytes | bytearray | memoryview):
        return {"output_base64": base64.b64encode(bytes(output)).decode("ascii")}
    try:
        encode = getattr(coord.engine_for(coord.resource(result.resource_id).type),
                         "encode_output", None)
    except Exception:
        encode = None
    if callable(encode):
        return {"output": encode(output)}
    if isinstance(output, Mapping):
        return {"output": {str(k): v for k, v in output.items()}}
    return {"output": output}


def result_json(coord: Any, result: ExecutionResult) -> dict[str, Any]:
    error = result.error
    return {
        "execution_id": result.execution_id, "status": result.status.value,
        "resource_id": result.resource_id, "caller": result.caller,
        **output_json(coord, result), "fee_used": result.fee_used,
        "error": None if error is None else error.message,
        "error_kind": None if error is None else error.kind.value,
        "error_source": None if error is None else error.source,
        "duration_ms": round(result.duration * 1e3, 3),
        **usage_json(result),
    }


def usage_json(result: ExecutionResult) -> dict[str, Any]:
    """The execution's resource use (CPU time of its engine call, peak memory as its engine
    counts it, and the engine's breakdown when it gave one)."""
    use: dict[str, Any] = {"cpu_seconds": result.cpu_seconds,
                           "memory_bytes": result.memory_bytes}
    if result.usage is not None:
        use["usage"] = dict(result.usage)
    return use


def status_json(status: Any) -> dict[str, Any]:
    return {
        "execution_id": status.execution_id, "status": status.status.value,
        "resource_id": status.resource_id, "caller": status.caller,
        "error": status.message if status.error_kind is not None else None,
        "error_kind": status.error_kind,
        "fee_used": status.fee_used, "duration_ms": round(status.duration * 1e3, 3),
    }
