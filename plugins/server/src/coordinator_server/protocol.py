"""The HTTP/1.1 protocol of ``coordinator serve``: uvicorn's httptools protocol (a C parser,
faster under load than the pure-Python h11 one: see the HTTP rows of ``make bench``) with the
limits of the ``[server]`` section applied per connection.

uvicorn bounds only idle keep-alive connections (``timeout_keep_alive``, and any byte a client
sends cancels it): a connection that never finishes its request line and headers, or sends a
body one byte at a time, would stay open forever and a few thousand of them would hold the
server's file descriptors. This subclass follows each request through the parser's callbacks
(message begin, headers complete, message complete) and the response's end:

- while the server waits for a request (a new connection, or after a response), the request
  line and headers must arrive within ``header_timeout``; a partly sent request then gets 408
  and the connection closes, an idle one just closes;
- while a body is being received, it must end within ``body_timeout`` (408 if no response has
  started, else the connection closes); a body the application did not read and left to be
  drained is closed once it passes ``max_body_bytes``;
- a connection beyond ``max_connections`` gets 503 to its request and is closed (uvicorn's
  ``limit_concurrency`` also counts running requests and answers in plain text);
- a request the parser refuses (or with headers over ``max_header_bytes``) gets a JSON 400.

Every such answer is JSON, ``{"error": ..., "kind": ...}``, like the application's.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from coordinator_server.settings import ServerSettings

#: the key of the lifespan state under which the application publishes its ServerState.
STATE_KEY = "coordinator_server"


def raw_response(status: int, reason: str, message: str, kind: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for the cases where the
    protocol cannot send one (no request was received yet)."""
    body = json.dumps({"error": message, "kind": kind}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


async def over_capacity(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI answer of a connection over ``max_connections``."""
    body = json.dumps({"error": "the server has too many open connections; retry later",
                       "kind": "unavailable"}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (idle connections
    each hold one) and return it; where there are no such limits, 0."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX system
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft)


_IDLE, _BODY = "idle", "body"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the ``[server]`` limits (see the module docstring):
    the request line and headers within ``header_timeout`` (at most ``max_header_bytes``),
    the body within ``body_timeout``, an unread body drained up to ``max_body_bytes``, the
    connection cap, and JSON answers to malformed HTTP. The limits are read when each
    connection starts, from the server state the application's lifespan publishes under
    :data:`STATE_KEY` (the defaults until then)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        state = self.app_state.get(STATE_KEY)
        limits = getattr(state, "limits", None)
        self.settings: ServerSettings = limits if isinstance(limits, ServerSettings) else (
            ServerSettings())
        self.timeout_keep_alive = self.settings.keep_alive_timeout
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes of a request line and headers not yet complete
        self._begun = False  # the current request's first byte was parsed
        self._complete = True  # the current request's body has been received
        self._drained = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.settings.max_connections:
            self.app = over_capacity
        self._arm(_IDLE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._phase is _IDLE
        super().data_received(data)
        if waiting and self._phase is _IDLE and not self.transport.is_closing():
            self._head_bytes += len(data)  # the headers are still not complete
            if self._head_bytes > self.settings.max_header_bytes:
                self.send_400_response(f"its request line and headers are over "
                                       f"{self.settings.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun, self._complete = True, False

    def on_headers_complete(self) -> None:
        self._head_bytes = 0
        super().on_headers_complete()
        self._arm(_BODY)

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and self.cycle.response_complete:
            self._drained += len(body)  # a body the application answered without reading
            if self._drained > self.settings.max_body_bytes:
                self.transport.close()
                return
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._complete = True
        if self.cycle is not None and self.cycle.response_complete:
            self._next()
        else:
            self._arm(None)  # the server works: no deadline on the client

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._complete:
            self._next()

    def _next(self) -> None:
        """Between requests: the next one's headers are due within ``header_timeout``."""
        self._drained = self._head_bytes = 0
        self._begun = False
        self._arm(None if self.transport.is_closing() else _IDLE)

    def send_400_response(self, msg: str) -> None:
        message = f"the request is not valid HTTP/1.1 ({msg.rstrip('.').lower()})"
        self.transport.write(raw_response(400, "Bad Request", message, "invalid_request"))
        self.transport.close()

    def _arm(self, phase: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is _IDLE:
            self._deadline = self.loop.call_later(self.settings.header_timeout, self._late,
                                                  phase)
        elif phase is _BODY and not self._complete:
            self._deadline = self.loop.call_later(self.settings.body_timeout, self._late, phase)

    def _late(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if phase is _IDLE:
            if self._begun or self._head_bytes:  # a request line or headers, incomplete
                self.transport.write(raw_response(
                    408, "Request Timeout", "the request's headers did not arrive within "
                    f"{self.settings.header_timeout:g} seconds ([server] header_timeout)",
                    "timeout"))
        elif self.cycle is not None and not self.cycle.response_started:
            self.transport.write(raw_response(
                408, "Request Timeout", "the request's body did not arrive within "
                f"{self.settings.body_timeout:g} seconds ([server] body_timeout)", "timeout"))
            self.cycle.disconnected = True  # the application's later answer is dropped
            self.cycle.message_event.set()
        self.transport.close()
