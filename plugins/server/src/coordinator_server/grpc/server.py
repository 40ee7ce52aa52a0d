"""The gRPC port of ``coordinator serve``: a ``grpc.aio`` server in uvicorn's event loop.

``grpc.aio`` rather than a thread-pool ``grpc.server`` beside uvicorn: the servicer then runs
on the same event loop as the REST routes and awaits the same ``execute_async``, so both
protocols share one process, one coordinator, one worker pool and one way to wait, with no
second pool of threads blocked on executions and no hand-off between loops. The server is
started by the application's lifespan, so its port opens with the HTTP port, before the
coordinator is open (ServerLive answers, ServerReady is false until then), and it stops when
uvicorn does: SIGTERM begins its stop at once (no new calls; in-flight calls get up to the
grace period), and the coordinator is closed only after it has stopped.

``grpc.so_reuseport`` is off so that a port already in use is an error at start, not a
second server silently sharing it.
"""

from __future__ import annotations

import asyncio

import grpc
from loguru import logger

from coordinator_server.app import MAX_BODY, ServerState
from coordinator_server.grpc import inference_pb2_grpc as pb_grpc
from coordinator_server.grpc.service import InferenceService

#: gRPC's own bound on a request: the default ``[server] max_body_bytes``, since the server
#: starts before the config is read; ModelInfer then checks the configured limit itself.
MAX_MESSAGE = MAX_BODY


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC binds it (an IPv6 address in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class GrpcFrontEnd:
    """The gRPC server of one ``coordinator serve``: ``start`` it in the running loop, then
    ``begin_stop`` (at SIGTERM) and ``stop`` (before the coordinator closes)."""

    def __init__(self, state: ServerState, host: str, port: int, grace: float) -> None:
        self.state, self.host, self.port, self.grace = state, host, port, grace
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind the port and serve; ``OSError`` if the port cannot be bound."""
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", -1),
        ])
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(self.state), server)
        where = address(self.host, self.port)
        try:
            bound = server.add_insecure_port(where)
        except RuntimeError:  # grpcio raises where older versions returned 0
            bound = 0
        if bound == 0:
            await server.stop(None)
            raise OSError(f"cannot bind the gRPC port {where} (in use, or not an address "
                          "of this machine)")
        await server.start()
        self._server = server
        logger.info("gRPC (Open Inference Protocol) on {}", where)

    def begin_stop(self) -> None:
        """Stop taking calls now; in-flight calls get up to ``grace`` seconds."""
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._server.stop(self.grace))

    async def stop(self) -> None:
        """Stop (if not begun already) and wait until every call has ended."""
        self.begin_stop()
        if self._stopping is not None:
            await self._stopping
