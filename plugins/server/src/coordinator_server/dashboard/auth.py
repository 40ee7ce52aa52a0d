"""Who may see the dashboard: a key with the ``view`` scope (or ``admin``), presented as a
bearer token or, for a browser, as the cookie ``POST /ui/login`` sets.

A browser cannot add an ``Authorization`` header to a page it navigates to, so the login form
exchanges a token for an ``HttpOnly``, ``SameSite=Strict`` cookie holding it: scripts on the
page cannot read it and other sites cannot send it. Every check reads the key store, so a
revoked key loses the dashboard at its next request, as it loses the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from coordinator_hookspecs import CoordinatorError
from coordinator_server import refusals
from coordinator_server.app import NO_AUTH, ApiKey, Refusal, ServerState, error, failure

COOKIE = "coordinator_ui"
Handler = Callable[[Request, ServerState, ApiKey], Awaitable[Response]]


def token_of(request: Request) -> str:
    """The bearer token of the request's header, else of the dashboard's cookie ('' if
    neither)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(COOKIE, "").strip()


def check(state: ServerState, token: str, scope: str) -> ApiKey | Refusal:
    """The key of ``token`` if it has ``scope``, else why not."""
    if not state.auth:
        return NO_AUTH
    if not token:
        return Refusal(401, "the dashboard needs a key with the view or admin scope: sign in "
                       "at /ui/login or send 'Authorization: Bearer <token>'", "anonymous")
    assert state.keys is not None
    key = state.keys.verify(token)
    if key is None:
        return Refusal(401, "the token is not an active key", "anonymous")
    if not key.allows(scope):
        return Refusal(403, f"the key {key.name!r} has scope {key.scope!r}; this needs "
                       f"{scope!r}", key.name)
    return key


def login_page(message: str = "", status: int = 200) -> HTMLResponse:
    """The sign-in form, with ``message`` (why the last attempt or visit was refused)."""
    html = resources.files(__package__).joinpath("static/login.html").read_text("utf-8")
    notice = f'<p class="notice" id="notice">{_escape(message)}</p>' if message else ""
    response = HTMLResponse(html.replace("<!--notice-->", notice), status_code=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="coordinator"'
    return response


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def ui_route(scope: str, state: ServerState, handler: Handler, page: bool = False
             ) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint of the dashboard: readiness, then the key from header or cookie, then
    ``handler``. A refusal leaves a ``security`` audit record as the API's do; a page
    (``page``) is refused with the sign-in form, an API call with the JSON error body."""

    async def endpoint(request: Request) -> Response:
        if state.coordinator is None or state.keys is None:
            return error(503, "the coordinator is not open yet", "unavailable")
        found = check(state, token_of(request), scope)
        if isinstance(found, Refusal):
            await refusals.record(state.coordinator, request, found.caller,
                                  "authenticate" if found.status == 401 else "authorize",
                                  found.message, status=found.status, scope=scope)
            return login_page(found.message, found.status) if page else found.response()
        try:
            return await handler(request, state, found)
        except CoordinatorError as exc:
            return failure(exc)

    return endpoint

