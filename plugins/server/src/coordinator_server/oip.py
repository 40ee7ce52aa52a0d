"""Open Inference Protocol v2 over REST (``/v2``): health, server and model metadata, infer.

Each infer is one execution through the whole pipeline (security, quota, fee, audit), run on
the coordinator's worker pool with the key's name as caller. ``parameters`` may carry
``timeout`` (seconds) and ``fee_limit`` for that execution.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coordinator_hookspecs import ExecutionRequest, InvalidRequest, ResourceInfo
from coordinator_server import strict
from coordinator_server.app import (
    HTTP_STATUS,
    ApiKey,
    ServerState,
    check_caller,
    error,
    json_body,
    route,
)
from coordinator_server.tensors import (
    check_outputs,
    datatype,
    decode_inputs,
    encode_outputs,
    oip_shape,
    requested_outputs,
)

EXTENSIONS: list[str] = []


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
    body = await json_body(request, state)
    check_caller(body, key)
    strict.infer_body(body)
    feeds = decode_inputs(body)
    wanted = requested_outputs(body)
    check_outputs([s["name"] for s in info.meta["outputs"]], wanted)
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
    response: dict[str, Any] = {
        "model_name": name, "model_version": version,
        "outputs": encode_outputs(result.output, wanted),
        "parameters": {"execution_id": result.execution_id, "fee_used": result.fee_used},
    }
    if "id" in body:
        response["id"] = body["id"]
    return JSONResponse(response)


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
