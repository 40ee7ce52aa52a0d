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
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from coordinator_hookspecs import CoordinatorError, ErrorKind, InvalidRequest, SecurityRejected
from coordinator_server import refusals
from coordinator_server.keys import ApiKey, KeyStore
from coordinator_server.settings import ServerSettings

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
        self.limits = ServerSettings()  # the [server] section, once the coordinator is open
        self.coordinator: Any = None
        self.keys: KeyStore | None = None
        self.models: Any = None
        self.handles: Any = None
        self.dashboard: Any = None  # the /ui dashboard's per-process state
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

    http_status = 413


class UnsupportedMediaType(InvalidRequest):
    """A body whose ``Content-Type`` the route does not read: answered 415."""

    http_status = 415


def failure(exc: CoordinatorError) -> JSONResponse:
    status = getattr(exc, "http_status", None) or HTTP_STATUS.get(exc.kind, 500)
    response = error(status, exc.message, exc.kind.value)
    if isinstance(exc, BodyTooLarge):  # the rest of the body is not worth draining
        response.headers["Connection"] = "close"
    return response


def _unauthorized(message: str) -> JSONResponse:
    response = error(401, message, "unauthorized")
    response.headers["WWW-Authenticate"] = 'Bearer realm="coordinator"'
    return response


@attrs.frozen
class Refusal:
    """A request refused before its handler: 401 (no valid key) or 403 (missing scope)."""

    status: int
    message: str
    caller: str  # the key's name, or "anonymous" when no key was recognised

    def response(self) -> JSONResponse:
        if self.status == 401:
            return _unauthorized(self.message)
        return error(self.status, self.message, ErrorKind.SECURITY_REJECTED.value)


def check_key(request: Request, state: ServerState, scope: str) -> ApiKey | Refusal:
    """The request's key, or why it is refused."""
    if not state.auth:
        return NO_AUTH
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Refusal(401, "this request needs 'Authorization: Bearer <token>'", "anonymous")
    assert state.keys is not None
    key = state.keys.verify(token.strip())
    if key is None:
        return Refusal(401, "the bearer token is not an active key", "anonymous")
    if not key.allows(scope):
        return Refusal(403, f"the key {key.name!r} has scope {key.scope!r}; this needs "
                       f"{scope!r}", key.name)
    return key


def authenticate(request: Request, state: ServerState, scope: str) -> ApiKey | JSONResponse:
    """The request's key, or the 401/403 response to send instead."""
    found = check_key(request, state, scope)
    return found.response() if isinstance(found, Refusal) else found


def route(scope: str | None, state: ServerState, handler: Handler
          ) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint: readiness, then the key (``scope`` None: no key), then
    ``handler``, with typed errors turned into their status. A refusal by the server
    itself (401, 403) leaves a ``security`` audit record."""

    async def endpoint(request: Request) -> Response:
        if state.coordinator is None or state.keys is None:
            return error(503, "the coordinator is not open yet" if state.failed is None
                         else f"the coordinator failed to open: {state.failed}",
                         "unavailable")
        key = NO_AUTH
        if scope is not None:
            found = check_key(request, state, scope)
            if isinstance(found, Refusal):
                await refusals.record(
                    state.coordinator, request, found.caller,
                    "authenticate" if found.status == 401 else "authorize", found.message,
                    status=found.status, scope=scope)
                return found.response()
            key = found
        try:
            return await handler(request, state, key)
        except CoordinatorError as exc:
            if exc.kind is ErrorKind.SECURITY_REJECTED and exc.source == "server":
                await refusals.record(state.coordinator, request, key.name, "request",
                                      exc.message, status=403)
            return failure(exc)

    return endpoint


async def json_body(request: Request, state: ServerState) -> Any:
    """The request's JSON body, bounded by ``max_json_bytes`` as well as ``max_body_bytes``
    (parsed JSON takes several times its size in memory)."""
    raw = await read_body(request, state, is_json=True)
    return parse_json(raw)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is too large for a 64-bit float")
    return value


def parse_json(raw: bytes) -> Any:
    """Strict JSON (RFC 8259): no ``NaN`` or ``Infinity``, no number too large for a float,
    no nesting deeper than the parser's recursion allows (``InvalidRequest`` otherwise)."""
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise InvalidRequest("the body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the checks above
        raise InvalidRequest(f"the body is not valid JSON: {str(exc)[:200]}") from None


async def read_body(request: Request, state: ServerState, is_json: bool = False) -> bytes:
    """The whole body, refused (413) as soon as its declared or streamed size passes the
    limit: ``max_body_bytes``, or for a JSON body the smaller ``max_json_bytes``."""
    limit, setting = state.max_body, "max_body_bytes"
    if is_json and state.limits.max_json_bytes < limit:
        limit, setting = state.limits.max_json_bytes, "max_json_bytes"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared[:40]} bytes, over the limit of {limit} "
                           f"([server] {setting})")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the body is over the limit of {limit} bytes "
                                   f"([server] {setting})")
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or cut off by the body timeout: nobody reads the answer
        raise InvalidRequest("the client disconnected before sending its whole body") from None
    return b"".join(chunks)


def check_caller(body: Any, key: ApiKey) -> None:
    """A body may name its caller only as the key's own name."""
    if isinstance(body, dict) and "caller" in body and body["caller"] != key.name:
        raise SecurityRejected(f"the caller is the key's name {key.name!r}; the body may not "
                               f"name another ({str(body['caller'])[:64]!r})", source="server")
