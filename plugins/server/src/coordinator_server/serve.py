"""``coordinator serve``: the application on uvicorn, with the coordinator's lifetime.

The HTTP port opens at once; the coordinator opens in a thread behind it, so
``/v2/health/live`` answers while ``/v2/health/ready`` stays false until the plugins are
loaded and the engines report healthy. On SIGTERM or Ctrl-C uvicorn stops accepting
connections and lets in-flight requests finish for up to ``grace`` seconds; then the
coordinator is closed (queued executions finish, the store closes cleanly).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from loguru import logger
from starlette.applications import Starlette

from coordinator_hookspecs import EngineBase, method_or_default
from coordinator_server import contract, fallbacks, keys_api, oip, records
from coordinator_server.app import ServerState
from coordinator_server.dashboard import api as dashboard
from coordinator_server.keys import KeyStore
from coordinator_server.models import ModelIndex
from coordinator_server.processes import Children, bind, report_ready
from coordinator_server.protocol import STATE_KEY, GuardedHttpToolsProtocol, raise_open_files_limit
from coordinator_server.settings import SECTION
from coordinator_server.tls import TlsFiles


def build_app(state: ServerState, open_coordinator: Callable[[], Any],
              on_failure: Callable[[], None], front: Any = None,
              children: Children | None = None, ready_fd: int | None = None) -> Starlette:
    """The application; opening ``open_coordinator`` starts with the server, closing it
    ends it. ``front``, a :class:`~coordinator_server.grpc.server.GrpcFrontEnd`, serves
    gRPC for the same lifetime and stops before the coordinator closes. ``children``: the
    other HTTP processes of ``--workers``, started once the coordinator serves its writer
    and stopped before it closes."""
    stack = contextlib.ExitStack()

    def open_all() -> None:
        coordinator = stack.enter_context(open_coordinator())
        if children is not None:
            coordinator.serve_writer()
            children.start()
            state.others_ready = children.ready
            stack.callback(children.stop, state.grace)
        warm_up(coordinator)
        state.keys = KeyStore(coordinator.config.data_dir)
        stack.callback(state.keys.close)
        state.models = ModelIndex(coordinator)
        state.limits = coordinator.config.section(SECTION)
        state.max_body = state.limits.max_body_bytes
        state.coordinator = coordinator
        report_ready(ready_fd)
        logger.info("coordinator open; serving")

    async def opening() -> None:
        try:
            await asyncio.to_thread(open_all)
        except Exception as exc:
            state.failed = str(exc)
            logger.error("the coordinator failed to open: {}", exc)
            on_failure()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if front is not None:
            try:
                await front.start()
            except OSError as exc:  # the port is taken: stop at once, exit 1
                state.failed = str(exc)
                logger.error("{}", exc)
                on_failure()
                yield {STATE_KEY: state}
                return
        task = asyncio.create_task(opening())
        try:
            yield {STATE_KEY: state}  # the HTTP protocol reads the [server] limits from it
        finally:
            state.closing = True
            if front is not None:
                await front.stop()
            await task
            if state.dashboard is not None:
                await state.dashboard.stop()
            await asyncio.to_thread(stack.close)

    return Starlette(
        routes=[*oip.routes(state), *contract.routes(state), *records.routes(state),
                *keys_api.routes(state), *dashboard.routes(state)],
        lifespan=lifespan, exception_handlers=fallbacks.HANDLERS)


def warm_up(coordinator: Any) -> None:
    """Let every engine load what its first execution would otherwise pay for (a runtime
    imported on first use), before the server reports ready. A failure is logged: the
    engine's own health and errors then speak for it."""
    for name, engine in coordinator.registered("engines").items():
        try:
            method_or_default(engine, "warm_up", EngineBase)()
        except Exception as exc:
            logger.warning("engine {} failed to warm up: {}", name, exc)


class _Server(uvicorn.Server):
    """uvicorn's server, also telling ``on_shutdown`` the moment its shutdown begins (so the
    gRPC port stops taking calls together with the HTTP port, not after it has drained)."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets: Any = None) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
        await super().shutdown(sockets)


def serve(open_coordinator: Callable[[], Any], *, host: str, port: int, auth: bool,
          grace: int, tls: TlsFiles | None = None, grpc_port: int | None = None,
          workers: int = 1, fd: int | None = None, child_args: list[str] | None = None,
          ready_fd: int | None = None) -> int:
    """Run until SIGTERM or Ctrl-C; 0 on a clean stop, 1 if the coordinator failed to open
    (or the gRPC port could not be bound). With ``tls`` (files already checked) the port
    speaks HTTPS only. ``workers`` > 1: this process and ``workers - 1`` more share one
    socket (``processes.py``; the others run ``child_args`` with ``--fd``); ``fd``: this
    process is one of those others."""
    state = ServerState(auth=auth)
    state.grace = grace
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    children = None
    sockets = None
    if fd is not None:  # the family is read from the inherited socket itself
        sockets = [socket.socket(fileno=fd)]
    elif workers > 1:
        sockets = [bind(host, port)]
        children = Children(workers - 1, sockets[0], child_args or [])
    front = None
    if grpc_port is not None:
        # Imported only here: its messages take the ``inference.*`` names in protobuf's
        # process-wide registry.
        from coordinator_server.grpc.server import GrpcFrontEnd

        front = GrpcFrontEnd(state, host, grpc_port, grace=max(1, grace), tls=tls)
    app = build_app(state, open_coordinator, stop, front, children, ready_fd)
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", access_log=False,
                            log_level="warning", timeout_graceful_shutdown=max(1, grace),
                            server_header=False, http=GuardedHttpToolsProtocol,
                            ssl_certfile=tls.cert if tls is not None else None,
                            ssl_keyfile=tls.key if tls is not None else None)
    server = _Server(config, front.begin_stop if front is not None else None)
    raise_open_files_limit()
    grpc_note = f", gRPC {host}:{grpc_port}" if grpc_port is not None else ""
    if not auth and child_args is not None:
        banner = (f"WARNING: --no-auth: every request on {host}:{port}{grpc_note} is accepted "
                  "without a key, as caller 'anonymous' with admin scope")
        print("!" * len(banner), banner, "!" * len(banner), sep="\n", file=sys.stderr,
              flush=True)
    scheme = "https" if tls is not None else "http"
    if child_args is not None:  # not a child of --workers: those say nothing at start
        print(f"coordinator serve: {scheme}://{host}:{port}{grpc_note} (auth "
              f"{'on' if auth else 'OFF'}"
              f"{f', {workers} HTTP processes' if workers > 1 else ''})", file=sys.stderr,
              flush=True)
    # uvicorn handles SIGTERM and SIGINT while it runs, then raises the signal again for the
    # handler that was there before: these make that a clean return instead of a kill.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server.run(sockets=sockets)
    if state.failed is not None:
        return 1
    print("coordinator serve: stopped; the coordinator is closed", file=sys.stderr, flush=True)
    return 0
