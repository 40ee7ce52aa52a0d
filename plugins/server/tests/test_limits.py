"""The ``[server]`` limits against slow, large and numerous clients, on real sockets.

A second live server with tight limits (``STRICT``) serves the tests that wait for a
deadline, so they take seconds rather than the defaults' tens of seconds; the session's
server, with the default limits, holds the thousands of idle connections.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import COORDINATOR, Live, await_ready, cli, free_port

STRICT = {"header_timeout": 1.5, "body_timeout": 1.5, "max_connections": 16,
          "max_body_bytes": 4096, "max_json_bytes": 2048, "keep_alive_timeout": 1}
IDLE = 2000


class Strict:
    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.url = f"http://127.0.0.1:{port}"

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def get(self, path: str, **kw: Any) -> httpx.Response:
        with httpx.Client(base_url=self.url, timeout=10) as client:  # a fresh connection
            return client.get(path, **kw)


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Strict]:
    data_dir = tmp_path_factory.mktemp("strict")
    made = cli(data_dir, "keys", "create", "slow", "--scope", "deploy", "--json")
    port = free_port()
    env = {**os.environ, **{f"COORDINATOR_SERVER__{k.upper()}": str(v)
                            for k, v in STRICT.items()}}
    log = (data_dir.parent / "strict.log").open("w+")
    proc = subprocess.Popen([COORDINATOR, "--data-dir", str(data_dir), "serve", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Strict(port, json.loads(made.stdout)["token"])
    await_ready(proc, lambda: server.get("/v2/health/ready").status_code == 200, log,
                "the strict server")
    yield server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    log.close()


def read_reply(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def dribble(sock: socket.socket, data: bytes, every: float) -> float:
    """Send ``data`` one byte every ``every`` seconds until the server answers; the seconds
    from the first byte to the answer."""
    start = time.monotonic()
    for byte in data:
        sock.sendall(bytes([byte]))
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            return time.monotonic() - start
    readable, _, _ = select.select([sock], [], [], 30)
    return time.monotonic() - start


def test_headers_sent_one_byte_a_second_get_408_at_the_header_timeout(strict: Strict) -> None:
    with strict.connect() as sock:
        took = dribble(sock, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", 1.0)
        status, headers, body = parse(read_reply(sock))
    assert status == 408 and body["kind"] == "timeout", body
    assert "header_timeout" in body["error"] and headers["connection"] == "close"
    assert STRICT["header_timeout"] <= took < STRICT["header_timeout"] + 1.5


def test_an_idle_connection_is_closed_at_the_header_timeout(strict: Strict) -> None:
    with strict.connect() as sock:
        start = time.monotonic()
        assert read_reply(sock) == b""  # closed without an answer: nothing was asked
        took = time.monotonic() - start
    assert STRICT["header_timeout"] - 0.1 <= took < STRICT["header_timeout"] + 1.5


def test_a_slow_body_gets_408_at_the_body_timeout(strict: Strict) -> None:
    head = (f"POST /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {strict.token}"
            "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode()
    with strict.connect() as sock:
        sock.sendall(head)
        took = dribble(sock, b'"resource_id": "' + b"a" * 60, 0.5)
        status, _, body = parse(read_reply(sock))
    assert status == 408 and body["kind"] == "timeout" and "body_timeout" in body["error"]
    assert STRICT["body_timeout"] - 0.1 <= took < STRICT["body_timeout"] + 1.5


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(strict: Strict) -> None:
    head = (f"POST /v1/resources?type=wasm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{strict.token}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
    with strict.connect() as sock:
        sock.sendall(head)
        for _ in range(STRICT["max_body_bytes"] // 1024 + 1):  # never the final 0-chunk
            sock.sendall(chunk)
        status, headers, body = parse(read_reply(sock))
    assert status == 413 and body["kind"] == "invalid_request", body
    assert "max_body_bytes" in body["error"] and headers["connection"] == "close"


def test_a_json_body_has_its_own_smaller_limit(strict: Strict) -> None:
    body = json.dumps({"resource_id": "0" * 64, "input": "A" * 3000}).encode()
    with httpx.Client(base_url=strict.url, timeout=10) as client:
        reply = client.post("/v1/executions", content=body, headers={
            "Authorization": f"Bearer {strict.token}", "Content-Type": "application/json"})
        assert reply.status_code == 413 and "max_json_bytes" in reply.json()["error"]
        deploy = client.post("/v1/resources", params={"type": "wasm"}, content=body,
                             headers={"Authorization": f"Bearer {strict.token}"})
        assert deploy.status_code == 400 and "magic header" in deploy.json()["error"]


def test_a_declared_length_over_the_limit_is_refused_before_the_body(strict: Strict) -> None:
    head = (f"POST /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {strict.token}"
            "\r\nContent-Length: 999999999\r\n\r\n").encode()
    with strict.connect() as sock:
        sock.sendall(head)
        status, _, body = parse(read_reply(sock))
    assert status == 413 and "999999999 bytes" in body["error"]


def test_connections_over_the_maximum_get_503_then_room_returns(strict: Strict) -> None:
    held = [strict.connect() for _ in range(STRICT["max_connections"])]
    try:
        time.sleep(0.2)  # let the server accept them all
        refused = strict.get("/v2/health/live")
        assert refused.status_code == 503, refused.text
        assert refused.json()["kind"] == "unavailable" and refused.headers["retry-after"]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert strict.get("/v2/health/live").status_code == 200


def test_malformed_http_gets_a_json_400(strict: Strict) -> None:
    for raw in (b"NOT HTTP AT ALL\r\n\r\n", b"GET /v2/h\xffealth HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000):
        with strict.connect() as sock:
            sock.sendall(raw)
            status, _, body = parse(read_reply(sock))
        assert status == 400 and body["kind"] == "invalid_request", (raw[:40], body)
    assert strict.get("/v2/health/live").status_code == 200


def _room_for(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 512
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the open-files hard limit ({hard}) is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def test_thousands_of_idle_connections_leave_room_for_a_request(live: Live) -> None:
    _room_for(IDLE)
    port = int(live.url.rsplit(":", 1)[1])
    idle = []
    try:
        for _ in range(IDLE):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        with httpx.Client(base_url=live.url, timeout=10) as client:
            start = time.monotonic()
            reply = client.get("/v1/resources",
                               headers={"Authorization": f"Bearer {live.tokens['alice']}"})
            took = time.monotonic() - start
        assert reply.status_code == 200, reply.text
        assert took < 1.0, f"a request beside {IDLE} idle connections took {took:.3f} s"
    finally:
        for sock in idle:
            sock.close()
    assert live.request("GET", "/v2/health/live").status_code == 200
