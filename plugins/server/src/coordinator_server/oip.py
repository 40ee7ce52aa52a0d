"""Open Inference Protocol v2 over REST (``/v2``): health, server and model metadata, infer.

Infer takes JSON tensors or, with the binary tensor data extension (``binary.py``), tensors
as raw bytes after the JSON, and answers each output in JSON or binary as the request asks.

Each infer is one execution through the whole pipeline (security, quota, fee, audit), run on
the coordinator's worker pool with the key's name as caller. ``parameters`` may carry
``timeout`` (seconds) and ``fee_limit`` for that execution.
"""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coordinator_hookspecs import ExecutionRequest, InvalidRequest, ResourceInfo
from coordinator_server import strict
from coordinator_server.app import (
    HTTP_STATUS,
    ApiKey,
    BodyTooLarge,
    ServerState,
    check_caller,
    error,
    parse_json,
    read_body,
    route,
)
from coordinator_server.binary import HEADER, binary_outputs, binary_tensor, split_body
from coordinator_server.binary import response as binary_response
from coordinator_server.tensors import (
    check_outputs,
    datatype,
    decode_inputs,
    encode_outputs,
    oip_shape,
    requested_outputs,
)

EXTENSIONS: list[str] = ["binary_tensor_data"]


@functools.cache  # importlib.metadata reads the installed files: measured, it doubled GET /v2
def _version() -> str:
    try:
        return metadata.version("coordinator-server")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def _tensors(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": s["name"], "datatype": datatype(str(s["dtype"])),
             "shape": oip_shape(s["shape"])} for s in specs]


def _platform(info: ResourceInfo) -> str:
    return "onnxruntime_onnx" if info.type == "onnx" else info.type


async def server_metadata(request: Request, state: ServerState, key: ApiKey) -> Response:
    return JSONResponse({"name": "coordinator", "version": _version(),
                         "extensions": EXTENSIONS})


async def model_metadata(request: Request, state: ServerState, key: ApiKey) -> Response:
    name = request.path_params["name"]
    info, version = state.models.get(name, request.path_params.get("version"))
    versions = [str(i + 1) for i in range(len(state.models.versions(name)))]
    return JSONResponse({
        "name": name, "versions": versions, "platform": _platform(info),
        "inputs": _tensors(info.meta["inputs"]), "outputs": _tensors(info.meta["outputs"]),
        "parameters": {"resource_id": info.id, "version": version},
    })


async def model_ready(request: Request, state: ServerState, key: ApiKey) -> Response:
    info, _ = state.models.get(request.path_params["name"], request.path_params.get("version"))
    engine = state.coordinator.engine_for(info.type)
    health = getattr(engine, "health", None)
    ready = bool(health()) if callable(health) else True
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def infer(request: Request, state: ServerState, key: ApiKey) -> Response:
    name = request.path_params["name"]
    info, version = state.models.get(name, request.path_params.get("version"))
    strict.json_media(request)
    raw, binary = split_body(await read_body(request, state), request.headers.get(HEADER))
    if len(raw) > state.limits.max_json_bytes:
        raise BodyTooLarge(f"the JSON part of the body is {len(raw)} bytes, over the limit of "
                           f"{state.limits.max_json_bytes} ([server] max_json_bytes)")
    body = parse_json(raw)
    check_caller(body, key)
    strict.infer_body(body)
    feeds = decode_inputs(body, binary)
    wanted = requested_outputs(body)
    available = [s["name"] for s in info.meta["outputs"]]
    check_outputs(available, wanted)
    in_binary = binary_outputs(body, available)
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be an object")
    result = await state.coordinator.execute_async(ExecutionRequest(
        resource_id=info.id, caller=key.name, input=feeds,
        fee_limit=strict.fee_limit(parameters.get("fee_limit"), "parameters.fee_limit"),
        timeout=strict.timeout(parameters.get("timeout"), "parameters.timeout")))
    if result.error is not None:
        return error(HTTP_STATUS.get(result.error.kind, 500), result.error.message,
                     result.error.kind.value)
    names = list(result.output) if wanted is None else wanted
    check_outputs(list(result.output), names)
    outputs, blobs = [], []
    for out in names:
        array = np.asarray(result.output[out])
        if out in in_binary:
            tensor, data = binary_tensor(out, datatype(str(array.dtype)), array)
            outputs.append(tensor)
            blobs.append(data)
        else:
            outputs += encode_outputs({out: array}, None)
    header: dict[str, Any] = {
        "model_name": name, "model_version": version, "outputs": outputs,
        "parameters": {"execution_id": result.execution_id, "fee_used": result.fee_used,
                       "cpu_seconds": result.cpu_seconds, "memory_bytes": result.memory_bytes},
    }
    if "id" in body:
        header["id"] = body["id"]
    return binary_response(header, blobs)


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def openapi_json(request: Request) -> Response:
    from coordinator_server.openapi import document

    return JSONResponse(document(_version()))


def routes(state: ServerState) -> list[Route]:
    async def ready(request: Request) -> Response:
        ok = state.ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    out = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/v2", route("execute", state, server_metadata), methods=["GET"]),
    ]
    for base in (model, versioned):
        out += [
            Route(base, route("execute", state, model_metadata), methods=["GET"]),
            Route(base + "/ready", route("execute", state, model_ready), methods=["GET"]),
            Route(base + "/infer", route("execute", state, infer), methods=["POST"]),
        ]
    return out
