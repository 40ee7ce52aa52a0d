"""Generated malformed requests (hypothesis) against the live server: whatever the method,
path, headers and body, and with or without a valid token, no answer is a 5xx, every error
is a JSON ``{"error", "kind"}``, the server stays up and the audit chain still verifies.

The profile is derandomized (the same examples on every run) with no example database, so
the test is deterministic in CI; a shared keep-alive client keeps it fast.
"""

from __future__ import annotations

import json
import socket
import string
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Live

settings.register_profile(
    "server-fuzz", derandomize=True, database=None, deadline=None, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.filter_too_much])
PROFILE = settings.get_profile("server-fuzz")

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
ROUTES = [
    "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{a}", "/v2/models/{a}/ready",
    "/v2/models/{a}/infer", "/v2/models/{a}/versions/{b}", "/v2/models/{a}/versions/{b}/infer",
    "/v2/models/clf/infer", "/v2/models/clf/versions/{b}/infer", "/v1/resources",
    "/v1/resources/{a}", "/v1/resources/{a}/state/{b}", "/v1/resources/{a}/events",
    "/v1/executions", "/v1/executions/{a}", "/v1/executions/{a}/cancel", "/v1/audit",
    "/v1/audit/verify", "/v1/keys", "/v1/keys/{a}", "/metrics", "/openapi.json", "/v1/{a}",
    "/v2/{a}",
]
KEYS = [None, "alice", "dora", "root"]
CONTENT_TYPES = [None, "application/json", "application/octet-stream", "text/plain",
                 "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                 "application/json; charset=latin-1", "\u00e9/\u00e8"]

segment = st.one_of(
    st.sampled_from(["clf", "..", ".", "%2e%2e", "0" * 64, "1", "-1", "99999999999999999999",
                     "ex-0", "%00", "%ff", "a%2Fb", "count", "alice2"]),
    st.text(alphabet=string.printable, min_size=1, max_size=40).map(lambda s: quote(s, "")),
    st.text(min_size=1, max_size=12).map(lambda s: quote(s, "")),
)
query = st.dictionaries(
    st.sampled_from(["wait", "limit", "start", "type", "name", "format", "capabilities",
                     "x"]),
    st.one_of(st.sampled_from(["false", "true", "0", "-1", "nan", "inf", "1e308", "wasm",
                               "onnx", "wat", "", "60.0001"]),
              st.text(max_size=20)),
    max_size=3)

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=20))
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                     st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=20)
tensor = st.fixed_dictionaries(
    {"name": st.one_of(st.just("x"), st.text(max_size=5)),
     "shape": st.one_of(st.lists(st.integers(-2, 2**64), max_size=4), json_values),
     "datatype": st.one_of(st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP16"]),
                           st.text(max_size=6)),
     "data": st.one_of(st.lists(st.one_of(st.integers(), st.floats(allow_nan=False),
                                          st.text(max_size=3)), max_size=8), json_values)},
    optional={"parameters": json_values, "extra": json_values})
infer_body = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(tensor, max_size=3), json_values)},
    optional={"id": json_values, "outputs": json_values, "parameters": st.one_of(
        json_values, st.fixed_dictionaries({}, optional={
            "timeout": st.one_of(st.floats(), st.integers()),
            "fee_limit": st.one_of(st.floats(), st.integers())}))})
execute_body = st.fixed_dictionaries(
    {"resource_id": st.one_of(st.just("0" * 64), st.text(max_size=70), json_values)},
    optional={k: st.one_of(json_values, st.integers(), st.floats()) for k in
              ("entry", "input", "args", "fee_limit", "timeout", "caller", "fee_limt")})
bodies = st.one_of(
    st.none(), st.binary(max_size=300),
    st.one_of(json_values, infer_body, execute_body).map(lambda v: json.dumps(v).encode()),
    st.text(max_size=200).map(lambda s: s.encode("utf-8")),
    st.sampled_from([b"{", b"[" * 5000, b'{"inputs": NaN}', b"\xff\xfe\xfd", b"null",
                     b'{"name": "fuzz"}', b"(module)", b'{"inputs": [{"data": [1e999]}]}']),
)
headers_extra = st.dictionaries(
    st.sampled_from(["x-a", "accept", "content-encoding", "expect", "range",
                     "inference-header-content-length", "x-request-id"]),
    st.text(alphabet=string.ascii_letters + string.digits + " -_;=/.,", max_size=30),
    max_size=3)


def check(reply: httpx.Response, method: str) -> None:
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    if reply.status_code >= 400 and method != "HEAD":
        body = reply.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("kind"), str), body


@pytest.fixture(scope="module")
def client(live: Live) -> Any:
    with httpx.Client(base_url=live.url, timeout=30) as shared:
        yield shared


@settings(PROFILE, max_examples=2500)
@given(method=st.sampled_from(METHODS), route=st.sampled_from(ROUTES), a=segment, b=segment,
       params=query, key=st.sampled_from([*KEYS, "bad"]),
       content_type=st.sampled_from(CONTENT_TYPES), body=bodies, extra=headers_extra)
def test_generated_requests_never_get_a_5xx(live: Live, client: httpx.Client, method: str,
                                            route: str, a: str, b: str, params: dict,
                                            key: str | None, content_type: str | None,
                                            body: bytes | None, extra: dict) -> None:
    path = route.format(a=a, b=b)
    if path.startswith("/v1/keys/") and method == "DELETE" and a in live.tokens:
        return  # revoking the session's own keys would starve the other tests
    headers = {k: v.strip() for k, v in extra.items() if v.strip()}
    if key == "bad":
        headers["authorization"] = "Bearer crd_fuzzed-token"
    elif key is not None:
        headers["authorization"] = f"Bearer {live.tokens[key]}"
    if content_type is not None:
        headers["content-type"] = content_type.encode("utf-8")  # type: ignore[assignment]
    try:
        reply = client.request(method, path, params=params, headers=headers, content=body)
    except (httpx.InvalidURL, httpx.LocalProtocolError):
        return  # the client refuses to send it (the raw-socket test sends such bytes)
    check(reply, method)


request_lines = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from([b"GET", b"POST", b"G\xffT", b"", b"PRI"]),
              st.binary(max_size=40),
              st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b""]),
              st.lists(st.binary(max_size=40), max_size=4),
              st.binary(max_size=60)).map(
        lambda t: t[0] + b" /v2/" + t[1] + b" " + t[2] + b"\r\n" + b"\r\n".join(t[3])
        + b"\r\n\r\n" + t[4]),
)


@settings(PROFILE, max_examples=500)
@given(raw=request_lines)
def test_generated_bytes_on_a_raw_socket_never_get_a_5xx(live: Live, raw: bytes) -> None:
    port = int(live.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)  # the end of what the client says: no timeout to wait
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    for line in out.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 "):
            assert line[9:10] != b"5", out[:300]


def test_the_server_is_up_and_its_audit_chain_verifies_after_the_fuzzing(live: Live) -> None:
    assert live.request("GET", "/v2/health/ready").status_code == 200
    report = live.request("GET", "/v1/audit/verify", "root").json()
    assert report["ok"] is True and report["first_bad_seq"] is None, report
