"""The contract API (``/v1``, JSON): deploy and list resources, execute, poll, cancel, state.

Executions started here are remembered (their handles, up to ``KEEP`` of them) so a later
``GET /v1/executions/{id}`` can return the full result, output included, and long-poll with
``wait=S``; one the server no longer holds (started elsewhere, or forgotten) is answered from
the coordinator's status (no output). A key sees and cancels only its own executions; an
admin key sees all. A synchronous execute that fails answers with its error kind's status
(``POST`` is the call); polling a failed execution is a successful ``GET`` (200).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coordinator_hookspecs import (
    EngineError,
    ExecutionRequest,
    ExecutionResult,
    InvalidRequest,
    NotFound,
    SecurityRejected,
)
from coordinator_server import strict
from coordinator_server.app import (
    HTTP_STATUS,
    ApiKey,
    ServerState,
    check_caller,
    json_body,
    parse_json,
    read_body,
    route,
)
from coordinator_server.encoding import resource_json, result_json, status_json
from coordinator_server.forms import deploy_form, is_multipart

KEEP = 10_000
MAX_WAIT = 60.0
_FIELDS = {"resource_id", "entry", "input", "args", "fee_limit", "timeout", "caller"}


class Handles:
    """The handles of executions this server started, newest last, bounded."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Any] = OrderedDict()

    def add(self, handle: Any) -> None:
        self._items[handle.execution_id] = handle
        while len(self._items) > KEEP:
            self._items.popitem(last=False)

    def get(self, execution_id: str) -> Any:
        return self._items.get(execution_id)


def _wait_seconds(request: Request) -> float:
    raw = request.query_params.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        raise InvalidRequest(f"wait={raw[:20]!r} is not a number of seconds") from None
    if not 0 <= wait <= MAX_WAIT:
        raise InvalidRequest(f"wait must be between 0 and {MAX_WAIT} seconds")
    return wait


def deploy_options(text: str | None) -> dict[str, Any]:
    """The deploy's engine options (``options``: a JSON object, e.g.
    ``{"max_batch_size": 32}``); the engine checks the keys and values."""
    if text is None:
        return {}
    try:
        options = parse_json(text.encode())
    except InvalidRequest as exc:
        raise InvalidRequest(f"options {exc.message.removeprefix('the body ')}") from None
    if not isinstance(options, dict):
        raise InvalidRequest(f"options must be a JSON object, got {type(options).__name__}")
    return options


async def deploy(request: Request, state: ServerState, key: ApiKey) -> Response:
    q: Mapping[str, str] = request.query_params
    raw: bytes | None = None
    if is_multipart(request):
        q, raw = await deploy_form(request, state)
    if "type" not in q:
        raise InvalidRequest("deploy needs the query parameter type (wasm, onnx)"
                             if raw is None else "deploy needs the form field type (wasm, onnx)")
    if raw is None:
        raw = await read_body(request, state)
    code: bytes | str = raw
    source_format = q.get("format", "binary")
    if source_format == "wat":
        try:
            code = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("format=wat needs a UTF-8 body") from None
    capabilities = [c for c in q.get("capabilities", "").split(",") if c]
    coord = state.coordinator
    try:
        coord.engine_for(q["type"])
    except EngineError as exc:  # a type no engine runs is the request's mistake, not ours
        raise InvalidRequest(exc.message) from None
    name = strict.resource_name(q.get("name", ""))
    options = deploy_options(q.get("options"))
    rid = await asyncio.to_thread(coord.deploy, code, q["type"], name=name,
                                  capabilities=capabilities, owner=key.name,
                                  source_format=source_format, options=options)
    state.models.forget()  # the next look-up by name sees this deploy
    return JSONResponse(resource_json(coord.resource(rid)), status_code=201)


async def list_resources(request: Request, state: ServerState, key: ApiKey) -> Response:
    infos = await asyncio.to_thread(state.coordinator.resources)
    return JSONResponse({"resources": [resource_json(i) for i in infos]})


async def show_resource(request: Request, state: ServerState, key: ApiKey) -> Response:
    info = state.coordinator.resource(request.path_params["rid"])
    return JSONResponse(resource_json(info, meta=True))


def _request(body: Any, key: ApiKey) -> ExecutionRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {', '.join(map(repr, unknown))}; fields are "
                             f"{', '.join(sorted(_FIELDS))}")
    check_caller(body, key)
    rid = body.get("resource_id")
    if not isinstance(rid, str):
        raise InvalidRequest("'resource_id' (a string) is required")
    payload: Any = b""
    if body.get("input") is not None:
        if isinstance(body["input"], str):
            try:
                payload = base64.b64decode(body["input"], validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest("'input' is not valid base64") from None
        else:  # a model's inputs: name -> array
            payload = body["input"]
    args = body.get("args")
    if args is not None and not (isinstance(args, list) and all(
            type(a) in (int, float) for a in args)):
        raise InvalidRequest("'args' must be a list of numbers")
    entry = body.get("entry")
    if entry is not None and not isinstance(entry, str):
        raise InvalidRequest("'entry' must be a string (an exported function's name)")
    return ExecutionRequest(resource_id=rid, caller=key.name, entry=entry,
                            input=payload, args=tuple(args) if args is not None else None,
                            fee_limit=strict.fee_limit(body.get("fee_limit")),
                            timeout=strict.timeout(body.get("timeout")))


async def execute(request: Request, state: ServerState, key: ApiKey) -> Response:
    strict.json_media(request)
    call = _request(await json_body(request, state), key)
    coord = state.coordinator
    if request.query_params.get("wait", "true").lower() in ("false", "0", "no"):
        coord.resource(call.resource_id)  # an unknown resource is 404 now, not later
        handle = coord.submit(call)
        state.handles.add(handle)
        return JSONResponse({"execution_id": handle.execution_id, "status": "queued"},
                            status_code=202)
    result: ExecutionResult = await coord.execute_async(call)
    status = 200 if result.error is None else HTTP_STATUS.get(result.error.kind, 500)
    return JSONResponse(result_json(coord, result), status_code=status)


def _own(state: ServerState, key: ApiKey, execution_id: str) -> Any:
    status = state.coordinator.status(execution_id)
    if status.caller != key.name and not key.allows("admin"):
        raise SecurityRejected(f"execution {execution_id!r} is not the key {key.name!r}'s",
                               source="server")
    return status


async def get_execution(request: Request, state: ServerState, key: ApiKey) -> Response:
    execution_id = request.path_params["execution_id"]
    wait = _wait_seconds(request)
    status = _own(state, key, execution_id)
    handle = state.handles.get(execution_id)
    if handle is None:
        return JSONResponse(status_json(status))
    if wait and not handle.done():
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(handle.future)), wait)
        except TimeoutError:
            pass
    if handle.done():
        return JSONResponse(result_json(state.coordinator, handle.result()))
    return JSONResponse(status_json(state.coordinator.status(execution_id)))


async def cancel(request: Request, state: ServerState, key: ApiKey) -> Response:
    execution_id = request.path_params["execution_id"]
    _own(state, key, execution_id)
    cancelled = state.coordinator.cancel(execution_id)
    return JSONResponse({"execution_id": execution_id, "cancelled": cancelled})


async def read_state(request: Request, state: ServerState, key: ApiKey) -> Response:
    rid, name = request.path_params["rid"], request.path_params["key"]
    state.coordinator.resource(rid)  # NotFound for an unknown resource
    value = await asyncio.to_thread(state.coordinator.state, rid, name.encode("utf-8"))
    if value is None:
        raise NotFound(f"resource {rid[:12]} has no state under {name[:64]!r}")
    return JSONResponse({"key": name, "value": base64.b64encode(value).decode("ascii")})


def routes(state: ServerState) -> list[Route]:
    state.handles = Handles()
    return [
        Route("/v1/resources", route("deploy", state, deploy), methods=["POST"]),
        Route("/v1/resources", route("execute", state, list_resources), methods=["GET"]),
        Route("/v1/resources/{rid}", route("execute", state, show_resource), methods=["GET"]),
        Route("/v1/resources/{rid}/state/{key:path}", route("execute", state, read_state),
              methods=["GET"]),
        Route("/v1/executions", route("execute", state, execute), methods=["POST"]),
        Route("/v1/executions/{execution_id}", route("execute", state, get_execution),
              methods=["GET"]),
        Route("/v1/executions/{execution_id}/cancel", route("execute", state, cancel),
              methods=["POST"]),
    ]
