"""JSON answers for what no route handles: an unknown path (404), a method the path does not
take (405), an HTTP error raised by Starlette itself, and, last, an exception a handler did
not expect (500; uvicorn logs its traceback: a bug). So every answer of the service has the
``{"error": ..., "kind": ...}`` shape, never Starlette's plain text."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

KIND_OF_STATUS = {404: "not_found", 405: "invalid_request", 413: "invalid_request"}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = (f"no route {request.method[:16]} {request.url.path[:256]}" if status == 404
               else f"{request.url.path[:256]} does not take {request.method[:16]}"
               if status == 405 else str(exc.detail))
    kind = KIND_OF_STATUS.get(status, "invalid_request" if status < 500 else "internal")
    return JSONResponse({"error": message, "kind": kind}, status_code=status,
                        headers=dict(exc.headers or {}))


async def unexpected(request: Request, exc: Exception) -> Response:
    # Starlette raises the exception again after this answer, and uvicorn logs it with its
    # traceback: logging it here too would print it twice.
    return JSONResponse({"error": f"internal error: {type(exc).__name__}", "kind": "internal"},
                        status_code=500)


HANDLERS: dict[Any, Any] = {HTTPException: http_error, Exception: unexpected}
