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
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from loguru import logger
from starlette.applications import Starlette

from coordinator_server import contract, keys_api, oip, records
from coordinator_server.app import ServerState
from coordinator_server.keys import KeyStore
from coordinator_server.models import ModelIndex
from coordinator_server.settings import SECTION
from coordinator_server.tls import TlsFiles


def build_app(state: ServerState, open_coordinator: Callable[[], Any],
              on_failure: Callable[[], None]) -> Starlette:
    """The application; opening ``open_coordinator`` starts with the server, closing it
    ends it."""
    stack = contextlib.ExitStack()

    def open_all() -> None:
        coordinator = stack.enter_context(open_coordinator())
        state.keys = KeyStore(coordinator.config.data_dir)
        stack.callback(state.keys.close)
        state.models = ModelIndex(coordinator)
        state.max_body = coordinator.config.section(SECTION).max_body_bytes
        state.coordinator = coordinator
        logger.info("coordinator open; serving")

    async def opening() -> None:
        try:
            await asyncio.to_thread(open_all)
        except Exception as exc:
            state.failed = str(exc)
            logger.error("the coordinator failed to open: {}", exc)
            on_failure()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(opening())
        try:
            yield
        finally:
            state.closing = True
            await task
            await asyncio.to_thread(stack.close)

    return Starlette(
        routes=[*oip.routes(state), *contract.routes(state), *records.routes(state),
                *keys_api.routes(state)],
        lifespan=lifespan)


def serve(open_coordinator: Callable[[], Any], *, host: str, port: int, auth: bool,
          grace: int, tls: TlsFiles | None = None) -> int:
    """Run until SIGTERM or Ctrl-C; 0 on a clean stop, 1 if the coordinator failed to open.
    With ``tls`` (files already checked) the port speaks HTTPS only."""
    state = ServerState(auth=auth)
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    app = build_app(state, open_coordinator, stop)
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", access_log=False,
                            log_level="warning", timeout_graceful_shutdown=max(1, grace),
                            server_header=False,
                            ssl_certfile=tls.cert if tls is not None else None,
                            ssl_keyfile=tls.key if tls is not None else None)
    server = uvicorn.Server(config)
    if not auth:
        banner = (f"WARNING: --no-auth: every request on {host}:{port} is accepted without a "
                  "key, as caller 'anonymous' with admin scope")
        print("!" * len(banner), banner, "!" * len(banner), sep="\n", file=sys.stderr,
              flush=True)
    scheme = "https" if tls is not None else "http"
    print(f"coordinator serve: {scheme}://{host}:{port} (auth {'on' if auth else 'OFF'})",
          file=sys.stderr, flush=True)
    # uvicorn handles SIGTERM and SIGINT while it runs, then raises the signal again for the
    # handler that was there before: these make that a clean return instead of a kill.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server.run()
    if state.failed is not None:
        return 1
    print("coordinator serve: stopped; the coordinator is closed", file=sys.stderr, flush=True)
    return 0
