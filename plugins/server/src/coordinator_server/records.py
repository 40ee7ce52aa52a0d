"""Read-only history over ``/v1``: a resource's events, the audit log (paged) and its check;
and ``/metrics``, the Prometheus plugin's registry when that plugin is loaded.

Events are public to any key (the contract emitted them for its callers); the audit log names
every caller, so it and ``audit/verify`` need the admin scope. The coordinator has no public
methods for the audit log, so these read its store (``coordinator.store``), as the core's own
``coordinator audit`` command does.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coordinator_hookspecs import InvalidRequest, NotFound
from coordinator_server.app import ApiKey, ServerState, route

MAX_PAGE = 1000


def _int(request: Request, name: str, default: int, top: int) -> int:
    raw = request.query_params.get(name, str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= top:
        raise InvalidRequest(f"{name} must be an integer from 1 to {top}, got {raw[:20]!r}")
    return int(raw)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


async def events(request: Request, state: ServerState, key: ApiKey) -> Response:
    rid = request.path_params["rid"]
    state.coordinator.resource(rid)  # NotFound for an unknown resource
    limit = _int(request, "limit", 100, MAX_PAGE)
    found = await asyncio.to_thread(state.coordinator.events, rid, limit)
    return JSONResponse({"events": _jsonable(found)})


def _page(store: Any, start: int, limit: int) -> list[dict[str, Any]]:
    return [_jsonable(attrs.asdict(r)) for r in itertools.islice(store.audit_records(start),
                                                                  limit)]


async def audit(request: Request, state: ServerState, key: ApiKey) -> Response:
    start = _int(request, "start", 1, 2**62)
    limit = _int(request, "limit", 100, MAX_PAGE)
    page = await asyncio.to_thread(_page, state.coordinator.store, start, limit)
    after = page[-1]["seq"] + 1 if len(page) == limit else None
    return JSONResponse({"records": page, "next_start": after})


async def verify(request: Request, state: ServerState, key: ApiKey) -> Response:
    report = await asyncio.to_thread(state.coordinator.store.verify)
    return JSONResponse(attrs.asdict(report))


async def metrics(request: Request, state: ServerState, key: ApiKey) -> Response:
    """The Prometheus text exposition of the sink that keeps a ``prometheus_client``
    registry (the prometheus plugin's), found by duck typing so this plugin needs neither it
    nor ``prometheus_client``."""
    sinks = getattr(getattr(state.coordinator, "registry", None), "metrics_sinks", ())
    for record in sinks:
        registry: Any = getattr(record.sink, "registry", None)
        if type(registry).__name__ == "CollectorRegistry":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            text = await asyncio.to_thread(generate_latest, registry)
            return Response(text, media_type=CONTENT_TYPE_LATEST)
    raise NotFound("no Prometheus metrics here: the prometheus plugin is not loaded")


def routes(state: ServerState) -> list[Route]:
    return [
        Route("/v1/resources/{rid}/events", route("execute", state, events), methods=["GET"]),
        Route("/v1/audit", route("admin", state, audit), methods=["GET"]),
        Route("/v1/audit/verify", route("admin", state, verify), methods=["GET"]),
        Route("/metrics", route("admin", state, metrics), methods=["GET"]),
    ]
