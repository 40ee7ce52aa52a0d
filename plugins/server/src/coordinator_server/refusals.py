"""Security audit records for the requests the server itself refuses.

A request without a valid bearer token (401), with a key lacking the route's scope (403), or
a body naming another caller or reaching another key's execution (403) never reaches the
pipeline, so no execution record says it happened. Each leaves one chained ``security``
record through :meth:`Coordinator.record_security_event`: the caller is the key's name, or
``anonymous`` when no key was recognised; the detail names the action, method and path,
never the token or its hash.

Every refused request appends a record, so a client hammering the server with bad tokens
grows the audit log by one record per request: that is the price of an audit trail of every
refusal. The record is written off the event loop so a flood of them does not stall the
requests being served.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from starlette.requests import Request

from coordinator_hookspecs import SecurityRejected

MAX_PATH = 256


def detail_of(method: str, route: str, action: str, **extra: Any) -> dict[str, Any]:
    """What was attempted: the action, the method and the (truncated) route or path."""
    return {"action": action, "method": method[:16], "route": route[:MAX_PATH], **extra}


def record_refusal(coordinator: Any, caller: str, detail: dict[str, Any], message: str) -> None:
    """Append the record (blocking; any front end, HTTP or not, may call it)."""
    try:
        coordinator.record_security_event(caller, detail,
                                          SecurityRejected(message, source="server"))
    except Exception as exc:  # the refusal stands even if the record cannot be written
        logger.error("could not write the security audit record of a refused request: {}",
                     exc)


async def record(coordinator: Any, request: Request, caller: str, action: str, message: str,
                 **extra: Any) -> None:
    """Leave the ``security`` record of a refused HTTP request (off the event loop)."""
    detail = detail_of(request.method, request.url.path, action, **extra)
    await asyncio.to_thread(record_refusal, coordinator, caller, detail, message)
