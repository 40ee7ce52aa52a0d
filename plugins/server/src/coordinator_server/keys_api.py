"""Keys over HTTP for admin keys: ``/v1/keys`` create (the token in the answer, once), list,
and revoke, the same operations as ``coordinator keys``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coordinator_hookspecs import InvalidRequest
from coordinator_server import strict
from coordinator_server.app import ApiKey, ServerState, json_body, route


async def create(request: Request, state: ServerState, key: ApiKey) -> Response:
    strict.json_media(request)
    body = await json_body(request, state)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise InvalidRequest("the body must be {\"name\": ..., \"scope\": ...}")
    unknown = sorted(set(body) - {"name", "scope"})
    if unknown:
        raise InvalidRequest(f"unknown field {', '.join(map(repr, unknown))}")
    scope = body.get("scope", "execute")
    assert state.keys is not None
    token = state.keys.create(body["name"], scope if isinstance(scope, str) else repr(scope))
    return JSONResponse({"name": body["name"], "scope": scope, "token": token}, status_code=201)


async def listing(request: Request, state: ServerState, key: ApiKey) -> Response:
    assert state.keys is not None
    return JSONResponse({"keys": [k.as_dict() for k in state.keys.list()]})


async def revoke(request: Request, state: ServerState, key: ApiKey) -> Response:
    assert state.keys is not None
    return JSONResponse(state.keys.revoke(request.path_params["name"]).as_dict())


def routes(state: ServerState) -> list[Route]:
    return [
        Route("/v1/keys", route("admin", state, create), methods=["POST"]),
        Route("/v1/keys", route("admin", state, listing), methods=["GET"]),
        Route("/v1/keys/{name}", route("admin", state, revoke), methods=["DELETE"]),
    ]
