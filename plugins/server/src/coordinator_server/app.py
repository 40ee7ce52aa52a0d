"""The ASGI application: routing, authentication, errors as ``{"error": ...}``.

Starlette rather than FastAPI: the service's hot path is one infer or execute per request,
and Starlette adds no validation layer (pydantic) in front of the checks the pipeline and the
engines already make with typed error kinds; it is also one small dependency instead of two
large ones. What FastAPI would give for free, an OpenAPI document, is written by hand for the
contract API instead.

Every route is wrapped by :func:`route`: it answers 503 until the coordinator is open,
checks the bearer token and scope (401, 403), and turns a :class:`CoordinatorError` into its
HTTP status. The health routes need no key, so load balancers and probes can use them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from coordinator_hookspecs import CoordinatorError, ErrorKind, InvalidRequest, SecurityRejected
from coordinator_server.keys import ApiKey, KeyStore

#: HTTP status of each error kind.
HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.SECURITY_REJECTED: 403,
    ErrorKind.QUOTA_EXCEEDED: 429,
    ErrorKind.FEE_EXHAUSTED: 402,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.CANCELLED: 409,
    ErrorKind.TRAP: 422,
    ErrorKind.ENGINE_ERROR: 500,
    ErrorKind.INTERNAL: 500,
}
NO_AUTH = ApiKey(name="anonymous", scope="admin", created_at=0.0)
MAX_BODY = 64 * 1024 * 1024  # until the coordinator's [server] section is read

Handler = Callable[[Request, "ServerState", ApiKey], Awaitable[Response]]


class ServerState:
    """What the routes share: the open coordinator (None until open), the key store, and
    whether keys are required."""

    def __init__(self, auth: bool = True, max_body: int = MAX_BODY) -> None:
        self.auth = auth
        self.max_body = max_body
        self.coordinator: Any = None
        self.keys: KeyStore | None = None
        self.models: Any = None
        self.handles: Any = None
        self.failed: str | None = None
        self.closing = False
        self.grace = 10  # seconds in-flight requests may take at shutdown
        #: with ``--workers``: whether the other HTTP processes have opened too
        self.others_ready: Callable[[], bool] = lambda: True

    @property
    def ready(self) -> bool:
        if self.coordinator is None or self.closing or not self.others_ready():
            return False
        dispatcher = getattr(self.coordinator, "dispatcher", None)
        return all(_healthy(bound.engine) for bound in getattr(dispatcher, "engines", ()))


def _healthy(engine: Any) -> bool:
    health = getattr(engine, "health", None)
    try:
        return bool(health()) if callable(health) else True
    except Exception:
        return False


def error(status: int, message: str, kind: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if kind is not None:
        body["kind"] = kind
    return JSONResponse(body, status_code=status)


class BodyTooLarge(InvalidRequest):
    """A request body over ``[server] max_body_bytes``: answered 413."""


def failure(exc: CoordinatorError) -> JSONResponse:
    status = 413 if isinstance(exc, BodyTooLarge) else HTTP_STATUS.get(exc.kind, 500)
    return error(status, exc.message, exc.kind.value)


def _unauthorized(message: str) -> JSONResponse:
    response = error(401, message, "unauthorized")
    response.headers["WWW-Authenticate"] = 'Bearer realm="coordinator"'
    return response


def authenticate(request: Request, state: ServerState, scope: str) -> ApiKey | JSONResponse:
    """The request's key, or the 401/403 response to send instead."""
    if not state.auth:
        return NO_AUTH
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("this request needs 'Authorization: Bearer <token>'")
    assert state.keys is not None
    key = state.keys.verify(token.strip())
    if key is None:
        return _unauthorized("the bearer token is not an active key")
    if not key.allows(scope):
        return error(403, f"the key {key.name!r} has scope {key.scope!r}; this needs {scope!r}",
                     ErrorKind.SECURITY_REJECTED.value)
    return key


def route(scope: str | None, state: ServerState, handler: Handler
          ) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint: readiness, then the key (``scope`` None: no key), then
    ``handler``, with typed errors turned into their status."""

    async def endpoint(request: Request) -> Response:
        if state.coordinator is None or state.keys is None:
            return error(503, "the coordinator is not open yet" if state.failed is None
                         else f"the coordinator failed to open: {state.failed}")
        key = NO_AUTH
        if scope is not None:
            found = authenticate(request, state, scope)
            if isinstance(found, JSONResponse):
                return found
            key = found
        try:
            return await handler(request, state, key)
        except CoordinatorError as exc:
            return failure(exc)

    return endpoint


async def json_body(request: Request, state: ServerState) -> Any:
    """The request's JSON body, bounded by the size limit (``InvalidRequest`` otherwise)."""
    return parse_json(await read_body(request, state))


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON (``InvalidRequest`` otherwise)."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None


async def read_body(request: Request, state: ServerState) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > state.max_body:
        raise BodyTooLarge(f"the body is {declared} bytes, over the limit of {state.max_body} "
                           "([server] max_body_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > state.max_body:
            raise BodyTooLarge(f"the body is over the limit of {state.max_body} bytes "
                               "([server] max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def check_caller(body: Any, key: ApiKey) -> None:
    """A body may name its caller only as the key's own name."""
    if isinstance(body, dict) and "caller" in body and body["caller"] != key.name:
        raise SecurityRejected(f"the caller is the key's name {key.name!r}; the body may not "
                               f"name another ({str(body['caller'])[:64]!r})", source="server")
