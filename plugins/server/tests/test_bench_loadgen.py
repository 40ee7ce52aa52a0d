"""The benchmark's load generator frames requests and responses correctly against the live
server, so the HTTP rows of ``make bench`` cannot rot silently (they are not run by the
tests themselves)."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlsplit

import pytest

from bench.loadgen import ProtocolError, ResponseParser, build_request, run_load

from .conftest import Live

BODY = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                               "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}).encode()


def _address(live: Live) -> tuple[str, int]:
    url = urlsplit(live.url)
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


def _infer(live: Live, token: str) -> bytes:
    host, port = _address(live)
    return build_request("POST", "/v2/models/clf/infer", f"{host}:{port}", BODY,
                         [("Authorization", f"Bearer {token}"),
                          ("Content-Type", "application/json")])


def test_parser_frames_responses_split_anywhere() -> None:
    stream = (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\nhello"
              b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    for cut in range(len(stream) + 1):
        parser = ResponseParser()
        got = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert [(r.status, r.body, r.close) for r in got] == [(200, b"hello", False),
                                                              (401, b"", True)]
        assert parser.idle


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
                                  b"HTTP/1.1 200 OK\r\nServer: x", b"SPDY/3 200 OK",
                                  b"HTTP/1.1 200 OK\r\nContent-Length: ten"])
def test_parser_refuses_what_it_cannot_frame(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(head + b"\r\n\r\n")


def test_a_raw_request_gets_the_same_answer_as_a_client_library(live: Live) -> None:
    token = live.tokens["alice"]
    with socket.create_connection(_address(live), timeout=10) as sock:
        sock.sendall(_infer(live, token))
        parser, responses = ResponseParser(), []
        while not responses:
            responses = parser.feed(sock.recv(65536))
    expected = live.request("POST", "/v2/models/clf/infer", "alice", content=BODY)
    assert responses[0].status == expected.status_code == 200
    ours, theirs = json.loads(responses[0].body), expected.json()
    assert ours["outputs"] == theirs["outputs"]
    assert ours["parameters"]["execution_id"] != theirs["parameters"]["execution_id"]


def test_keep_alive_load_completes_every_request(live: Live) -> None:
    host, port = _address(live)
    report = asyncio.run(run_load(host, port, _infer(live, live.tokens["alice"]), clients=4,
                                  max_requests=40, expect_body=b'"outputs"'))
    assert (report.requests, report.errors) == (40, 0), report.first_error
    assert 0 < report.p50_ms <= report.p99_ms
    refused = asyncio.run(run_load(host, port, _infer(live, "not-a-key"), clients=2,
                                   max_requests=6, expect_status=401,
                                   expect_body=b'"unauthorized"'))
    assert (refused.requests, refused.errors) == (6, 0), refused.first_error
