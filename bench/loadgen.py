"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight each.

Every connection sends the same pre-built request bytes, reads the response with a minimal
parser (status line, ``Content-Length`` framing, ``Connection: close``), records the latency,
and sends the next request at once. It is an ``asyncio.Protocol`` driven by callbacks, so a
request costs the client one ``write`` and one parse: no coroutine, no client library, and
the load generator stays well below the server it drives (``httpx`` on asyncio would spend
more CPU per request than a fast server does). It runs as its own process
(``python -m bench.loadgen``, JSON report on stdout) so it never shares the server's
interpreter or the in-process benchmark's; the report includes the client's own CPU time and
the server's (its process tree, read from ``/proc``; NaN elsewhere) over the measured window,
so a reader can see how much of a shared machine each side took.

A response that is not the expected status, or whose body lacks the expected bytes, counts as
an error (the first one is kept in the report): a benchmark must not count fast failures as
throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import attrs

MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response this parser frames."""


def build_request(method: str, path: str, host: str, body: bytes = b"",
                  headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The raw bytes of one keep-alive HTTP/1.1 request with ``Content-Length`` framing."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@attrs.frozen
class Response:
    status: int
    body: bytes
    close: bool  # the server will close the connection after this response


class ResponseParser:
    """Frames responses out of a byte stream that may split or join them anywhere."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._head: tuple[int, int, bool] | None = None  # status, body length, close

    def feed(self, data: bytes) -> list[Response]:
        """Add received bytes; return every response they complete, in order."""
        self._buffer += data
        out: list[Response] = []
        while True:
            if self._head is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        raise ProtocolError(f"no end of the response head in {MAX_HEAD} bytes")
                    return out
                self._head = _parse_head(bytes(self._buffer[:end]))
                del self._buffer[:end + 4]
            status, length, close = self._head
            if len(self._buffer) < length:
                return out
            out.append(Response(status, bytes(self._buffer[:length]), close))
            del self._buffer[:length]
            self._head = None

    @property
    def idle(self) -> bool:
        """True between responses (no partial response buffered)."""
        return self._head is None and not self._buffer


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    length: int | None = None
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError(f"malformed header line {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            if not value.isdigit():
                raise ProtocolError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            raise ProtocolError("chunked responses are not framed by this parser")
        elif name == b"connection":
            close = value.lower() == b"close"
    if length is None:
        raise ProtocolError(f"a {int(parts[1])} response without Content-Length")
    return int(parts[1]), length, close


@attrs.define
class Stats:
    """What the connections share: the window, the latencies inside it, errors."""

    measure_from: float
    stop_at: float
    max_requests: int | None
    expect_status: int
    expect_body: bytes
    latencies: list[float] = attrs.field(factory=list)
    errors: int = 0
    first_error: str = ""
    sent: int = 0

    def record(self, started: float, now: float, response: Response) -> None:
        ok = response.status == self.expect_status and self.expect_body in response.body
        if not ok:
            self.errors += 1
            if not self.first_error:
                self.first_error = f"{response.status}: {response.body[:300]!r}"
        if started >= self.measure_from and ok:
            self.latencies.append(now - started)

    def more(self, now: float) -> bool:
        if self.max_requests is not None:
            return self.sent < self.max_requests
        return now < self.stop_at


class Connection(asyncio.Protocol):
    """One keep-alive client: send, wait for the whole response, send again."""

    def __init__(self, request: bytes, stats: Stats, done: asyncio.Future[None]) -> None:
        self.request, self.stats, self.done = request, stats, done
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.stats.sent += 1
        self.started = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            responses = self.parser.feed(data)
        except ProtocolError as exc:
            self._finish(exc)
            return
        for response in responses:
            now = time.perf_counter()
            self.stats.record(self.started, now, response)
            if response.close:
                self._finish(ProtocolError(f"the server closed the connection after a "
                                           f"{response.status} response"))
                return
            if self.stats.more(now):
                self._send()
            else:
                self._finish(None)
                return

    def connection_lost(self, exc: Exception | None) -> None:
        # After a normal finish this is a no-op; before it, the server hung up on us.
        self._finish(exc or ProtocolError("the server closed the connection"))

    def _finish(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


@attrs.frozen
class Report:
    """One load run: completed requests in the window, their latencies, the client's CPU."""

    requests: int
    errors: int
    seconds: float
    throughput: float
    p50_ms: float
    p99_ms: float
    client_cpu: float  # the client's CPU seconds per wall second of the window (cores)
    server_cpu: float  # the same of ``server_pid``'s process tree (NaN: not asked, no /proc)
    first_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


async def run_load(host: str, port: int, request: bytes, *, clients: int = 32,
                   duration: float = 2.0, warmup: float = 0.5,
                   max_requests: int | None = None, expect_status: int = 200,
                   expect_body: bytes = b"", server_pid: int | None = None) -> Report:
    """Drive ``clients`` keep-alive connections for ``warmup + duration`` seconds (or until
    ``max_requests`` were sent, all of them measured); report the measured window, with the
    CPU use of ``server_pid`` and its children over it when given."""
    loop = asyncio.get_running_loop()
    begin = time.perf_counter()
    measure_from = begin if max_requests is not None else begin + warmup
    stats = Stats(measure_from=measure_from, stop_at=measure_from + duration,
                  max_requests=max_requests, expect_status=expect_status,
                  expect_body=expect_body)
    done: list[asyncio.Future[None]] = []
    for _ in range(clients):
        future: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(partial(Connection, request, stats, future), host, port)
        done.append(future)
    # CPU and wall clock of the measured window: wait out the warm-up first.
    await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
    server0 = tree_cpu(server_pid) if server_pid else float("nan")
    cpu0, wall0 = _cpu(), time.perf_counter()
    await asyncio.gather(*done)
    wall = time.perf_counter() - wall0
    cpu = _cpu() - cpu0
    server = (tree_cpu(server_pid) - server0) / wall if server_pid else float("nan")
    lat = sorted(stats.latencies)
    seconds = time.perf_counter() - measure_from
    p50 = lat[len(lat) // 2] if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    return Report(requests=len(lat), errors=stats.errors, seconds=seconds,
                  throughput=len(lat) / seconds if seconds > 0 else float("nan"),
                  p50_ms=p50 * 1e3, p99_ms=p99 * 1e3,
                  client_cpu=cpu / wall if wall > 0 else float("nan"), server_cpu=server,
                  first_error=stats.first_error)


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (NaN without /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            if p == pid:  # no /proc, or the process is gone: nothing to report
                return float("nan")
    return total


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--request-file", required=True, help="the raw HTTP request bytes")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--expect-status", type=int, default=200)
    parser.add_argument("--expect-body", default="", help="bytes every response body holds")
    parser.add_argument("--server-pid", type=int, help="report this process tree's CPU use")
    args = parser.parse_args(argv)
    request = Path(args.request_file).read_bytes()
    try:
        report = asyncio.run(run_load(
            args.host, args.port, request, clients=args.clients, duration=args.duration,
            warmup=args.warmup, expect_status=args.expect_status,
            expect_body=args.expect_body.encode(), server_pid=args.server_pid))
    except (OSError, ProtocolError) as exc:
        print(json.dumps({"failed": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(report.as_dict()))
    return 0


if __name__ == "__main__":  # python -m bench.loadgen (from the repository root)
    sys.exit(main())
