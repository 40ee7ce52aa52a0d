"""The ``/metrics`` HTTP endpoint: ``prometheus_client``'s server thread, stoppable."""

from __future__ import annotations

from typing import Any

from coordinator_hookspecs import InvalidRequest


class MetricsServer:
    """Serves ``registry`` on ``addr:port`` from a daemon thread until :meth:`stop`."""

    def __init__(self, registry: Any, addr: str, port: int) -> None:
        from prometheus_client import start_http_server  # only once an endpoint is wanted

        try:
            self._httpd, self._thread = start_http_server(port, addr, registry=registry)
        except OSError as exc:
            raise InvalidRequest(f"cannot serve /metrics on {addr}:{port}: {exc}") from None
        self.addr = addr

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=2.0)
