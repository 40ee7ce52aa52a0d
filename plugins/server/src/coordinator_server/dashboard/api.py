"""The dashboard's routes: its pages and files, sign-in, and the JSON it polls.

``/ui/api/overview`` (once a second) answers from the sampler's last snapshot and the
audit chain's head; ``/ui/api/executions`` and ``/ui/api/executions/{id}`` read the store.
None of them touches an execution. The one action, ``POST /ui/api/audit/verify``, walks the
whole chain, so it needs the admin scope: a ``view`` key sees the last result but cannot
start one.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import attrs
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from coordinator_hookspecs import InvalidRequest, NotFound, Status
from coordinator_server.app import ApiKey, Refusal, ServerState, read_body
from coordinator_server.dashboard import auth
from coordinator_server.dashboard.history import Filters, History
from coordinator_server.dashboard.series import Sampler, series
from coordinator_server.encoding import output_json

STATIC = resources.files(__package__).joinpath("static")
#: The files under /ui/static: name -> (path in the package, media type). Nothing else is
#: served.
FILES = {
    "app.js": ("app.js", "text/javascript"), "style.css": ("style.css", "text/css"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
}
STATUSES = tuple(s.value for s in Status)
MAX_LIMIT = 500
MAX_FILTER = 256


class Dashboard:
    """What the dashboard keeps in one server process: its sampler, its store reader and
    the last verification of the audit chain (made from here)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._sampler: Sampler | None = None
        self._history: History | None = None
        self.last_verify: dict[str, Any] | None = None
        self._verifying = asyncio.Lock()

    @property
    def sampler(self) -> Sampler:
        if self._sampler is None:
            self._sampler = Sampler(self.state.coordinator, running=lambda: not
                                    self.state.closing)
        self._sampler.start()
        return self._sampler

    @property
    def history(self) -> History:
        if self._history is None:
            self._history = History(self.state.coordinator.store)
        return self._history

    async def stop(self) -> None:
        """Stop sampling and close the store reader (before the coordinator closes)."""
        if self._sampler is not None:
            await self._sampler.stop()
        if self._history is not None:
            self._history.close()


# -- pages and files -------------------------------------------------------------------------
async def index(request: Request, state: ServerState, key: ApiKey) -> Response:
    return HTMLResponse(STATIC.joinpath("index.html").read_text("utf-8"),
                        headers={"Cache-Control": "no-store"})


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in FILES:
        return JSONResponse({"error": f"no dashboard file {name[:64]!r}", "kind": "not_found"},
                            status_code=404)
    path, media = FILES[name]
    return Response(STATIC.joinpath(path).read_bytes(), media_type=media,
                    headers={"Cache-Control": "public, max-age=3600"})


async def login_form(request: Request) -> Response:
    return auth.login_page()


def make_login(state: ServerState) -> Any:
    async def login(request: Request) -> Response:
        """Check the posted token; on success set the cookie and go to the dashboard."""
        if state.coordinator is None or state.keys is None:
            return auth.login_page("the coordinator is not open yet; try again", 503)
        raw = await read_body(request, state)
        token = parse_qs(raw.decode("utf-8", errors="replace")).get("token", [""])[0].strip()
        found = auth.check(state, token, "view")
        if isinstance(found, Refusal):
            from coordinator_server import refusals

            await refusals.record(state.coordinator, request, found.caller,
                                  "authenticate" if found.status == 401 else "authorize",
                                  found.message, status=found.status, scope="view")
            return auth.login_page(found.message, found.status)
        response = RedirectResponse("/ui", status_code=303)
        response.set_cookie(auth.COOKIE, token, httponly=True, samesite="strict", path="/ui",
                            secure=request.url.scheme == "https")
        return response

    return login


async def logout(request: Request) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/ui")
    return response


# -- the data --------------------------------------------------------------------------------
def _engines(snapshot: dict[str, Any], errors: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, **counters, "last_error": errors.get(name)}
            for name, counters in sorted((snapshot.get("engines") or {}).items())]


def overview_of(board: Dashboard, key: ApiKey) -> dict[str, Any]:
    sampler = board.sampler
    snapshot = sampler.latest
    names = sorted(snapshot.get("engines") or {})
    history = board.history
    return {
        "now": time.time(),
        "viewer": {"name": key.name, "scope": key.scope, "can_verify": key.allows("admin")},
        "tiles": sampler.tiles(),
        "series": series(list(sampler.samples)),
        "engines": _engines(snapshot, history.last_errors(names)),
        "workers": snapshot.get("workers"),
        "quota": snapshot.get("quota") or {},
        "by_error_kind": snapshot.get("by_error_kind") or {},
        "audit": {**history.head(), "last_verify": board.last_verify},
    }


def make_overview(board: Dashboard) -> Any:
    async def overview(request: Request, state: ServerState, key: ApiKey) -> Response:
        if not board.sampler.latest:
            await board.sampler.sample()
        return JSONResponse(await asyncio.to_thread(overview_of, board, key))

    return overview


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    if len(value) > MAX_FILTER:
        raise InvalidRequest(f"the {name} filter is over {MAX_FILTER} characters")
    return value or None


def _seconds(request: Request, name: str) -> float | None:
    raw = _text(request, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"{name}={raw[:40]!r} is not a time in seconds since the epoch"
                             ) from None
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"{name}={raw[:40]!r} is not a time in seconds since the epoch")
    return value


def filters_of(request: Request, coordinator: Any) -> Filters:
    """The listing's filters from the query, each checked (``InvalidRequest`` naming it)."""
    known = {"caller", "resource", "engine", "status", "since", "until", "limit"}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidRequest(f"unknown filter {', '.join(map(repr, unknown))}; filters are "
                             f"{', '.join(sorted(known))}")
    status = _text(request, "status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status={status[:40]!r} is not one of {', '.join(STATUSES)}")
    raw_limit = _text(request, "limit") or "100"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got "
                             f"{raw_limit[:20]!r}")
    resource = _text(request, "resource")
    ids = None
    if resource is not None:
        ids = tuple(r.id for r in coordinator.resources()
                    if resource in (r.id, r.name) or (len(resource) >= 8
                                                       and r.id.startswith(resource)))
    return Filters(caller=_text(request, "caller"), resource_ids=ids,
                   engine=_text(request, "engine"), status=status,
                   since=_seconds(request, "since"), until=_seconds(request, "until"),
                   limit=int(raw_limit))


def _names(coordinator: Any) -> dict[str, Any]:
    return {r.id: {"name": r.name, "type": r.type} for r in coordinator.resources()}


def make_executions(board: Dashboard) -> Any:
    async def executions(request: Request, state: ServerState, key: ApiKey) -> Response:
        f = filters_of(request, state.coordinator)
        rows = await asyncio.to_thread(board.history.executions, f)
        names = _names(state.coordinator)
        for row in rows:
            row["resource"] = names.get(row["resource_id"], {})
        return JSONResponse({"executions": rows, "filters": attrs.asdict(f)})

    return executions


def _effects(result: Any) -> list[dict[str, Any]]:
    out = []
    for effect in result.effects:
        item: dict[str, Any] = {"kind": effect.kind, "resource_id": effect.resource_id}
        for field in ("key", "value"):
            raw = getattr(effect, field)
            try:
                item[field] = raw.decode("utf-8")
            except UnicodeDecodeError:
                item[field + "_base64"] = base64.b64encode(raw).decode("ascii")
        out.append(item)
    return out


def _result_extras(result: Any) -> dict[str, Any]:
    """The result's fields beyond the core's (an engine's resource use, when reported)."""
    core = {"execution_id", "status", "resource_id", "caller", "output", "fee_used",
            "effects", "error", "engine", "duration", "parent_id"}
    extras = {}
    for field in attrs.fields(type(result)):
        value = getattr(result, field.name)
        if field.name not in core and isinstance(value, int | float | str | dict | None):
            extras[field.name] = value
    return extras


def detail_of(board: Dashboard, execution_id: str) -> dict[str, Any]:
    coordinator = board.state.coordinator
    history = board.history
    record = history.record(execution_id)
    if record is None:
        status = coordinator.status(execution_id)  # NotFound for an id never seen
        return {"execution_id": execution_id, "status": status.status.value,
                "record": None, "caller": status.caller, "resource_id": status.resource_id}
    names = _names(coordinator)
    out: dict[str, Any] = {
        "execution_id": execution_id, "status": record["status"], "record": record,
        "request": {"caller": record["caller"], "resource_id": record["resource_id"],
                    "resource": names.get(record["resource_id"], {}),
                    **{k: v for k, v in record["detail"].items()}},
        "fee_used": record["fee_used"], "duration_ms": round(record["duration"] * 1e3, 3),
        "error": None if record["error_kind"] is None else
        {"kind": record["error_kind"], "message": record["message"]},
        "events": history.events(execution_id, record["resource_id"]),
        "parent": history.record(record["parent_id"]) if record["parent_id"] else None,
        "children": history.children(execution_id, record["seq"]),
        "effects": None, "resource_use": None, "output": None,
    }
    handle = board.state.handles.get(execution_id) if board.state.handles else None
    if handle is not None and handle.done():
        result = handle.result()
        out["effects"] = _effects(result)
        out["resource_use"] = _result_extras(result) or None
        out["output"] = output_json(coordinator, result)
    return out


def make_detail(board: Dashboard) -> Any:
    async def detail(request: Request, state: ServerState, key: ApiKey) -> Response:
        execution_id = request.path_params["execution_id"]
        if len(execution_id) > MAX_FILTER:
            raise InvalidRequest(f"the execution id is over {MAX_FILTER} characters")
        found = await asyncio.to_thread(detail_of, board, execution_id)
        if found is None:
            raise NotFound(f"no execution {execution_id[:64]!r}")
        return JSONResponse(found)

    return detail


def make_verify(board: Dashboard) -> Any:
    async def verify(request: Request, state: ServerState, key: ApiKey) -> Response:
        async with board._verifying:  # one walk at a time
            started = time.time()
            report = await asyncio.to_thread(state.coordinator.store.verify)
            board.last_verify = {**attrs.asdict(report), "at": started, "by": key.name,
                                 "seconds": round(time.time() - started, 3)}
        return JSONResponse(board.last_verify)

    return verify


def routes(state: ServerState) -> list[Route]:
    board = Dashboard(state)
    state.dashboard = board
    ui = auth.ui_route
    return [
        Route("/ui", ui("view", state, index, page=True), methods=["GET"]),
        Route("/ui/login", login_form, methods=["GET"]),
        Route("/ui/login", make_login(state), methods=["POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Route("/ui/static/{name}", static, methods=["GET"]),
        Route("/ui/api/overview", ui("view", state, make_overview(board)), methods=["GET"]),
        Route("/ui/api/executions", ui("view", state, make_executions(board)),
              methods=["GET"]),
        Route("/ui/api/executions/{execution_id}", ui("view", state, make_detail(board)),
              methods=["GET"]),
        Route("/ui/api/audit/verify", ui("admin", state, make_verify(board)),
              methods=["POST"]),
    ]
