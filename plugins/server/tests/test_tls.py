"""``coordinator serve --tls-cert --tls-key``: one more live server, with a certificate from a
test CA made by ``trustme``, answers over HTTPS to a client trusting that CA, and not over
plain HTTP; bad TLS options end the command with a clear error before any port is bound."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from .conftest import COORDINATOR, await_ready, cli, free_port


class Https:
    def __init__(self, port: int, context: ssl.SSLContext, token: str, grpc_port: int,
                 ca_pem: Path) -> None:
        self.port, self.context, self.token = port, context, token
        self.grpc_port, self.ca_pem = grpc_port, ca_pem


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pair(ca: trustme.CA, folder: Path, name: str) -> tuple[Path, Path]:
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.fixture(scope="module")
def https(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Https]:
    data_dir = tmp_path_factory.mktemp("tls")
    cert, key = write_pair(ca, data_dir.parent, "server")
    token = json.loads(cli(data_dir, "keys", "create", "tess", "--json").stdout)["token"]
    port, grpc_port = free_port(), free_port()
    ca_pem = data_dir.parent / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    log = (data_dir.parent / "serve-tls.log").open("w+")
    proc = subprocess.Popen([COORDINATOR, "--data-dir", str(data_dir), "serve", "--port",
                             str(port), "--grpc-port", str(grpc_port), "--tls-cert", str(cert),
                             "--tls-key", str(key)],
                            stdout=log, stderr=subprocess.STDOUT)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with httpx.Client(verify=context, timeout=10) as client:
        await_ready(proc, lambda: client.get(
            f"https://127.0.0.1:{port}/v2/health/ready").status_code == 200, log,
            "coordinator serve --tls-cert")
    yield Https(port, context, token, grpc_port, ca_pem)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    log.seek(0)
    assert f"https://127.0.0.1:{port}" in log.read()
    log.close()


def test_https_with_the_ca(https: Https) -> None:
    with httpx.Client(base_url=f"https://127.0.0.1:{https.port}", verify=https.context,
                      timeout=10) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        meta = client.get("/v2", headers={"Authorization": f"Bearer {https.token}"})
        assert meta.status_code == 200 and meta.json()["name"] == "coordinator"
        assert client.get("/v2").status_code == 401


def test_plain_http_and_an_untrusted_client_fail(https: Https) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{https.port}/v2/health/live", timeout=10)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{https.port}/v2/health/live", timeout=10)


def test_grpc_speaks_tls_too(https: Https) -> None:
    import tritonclient.grpc as oip

    secure = oip.InferenceServerClient(f"127.0.0.1:{https.grpc_port}", ssl=True,
                                       root_certificates=str(https.ca_pem))
    assert secure.is_server_live()
    headers = {"authorization": f"Bearer {https.token}"}
    assert secure.get_server_metadata(headers=headers).name == "coordinator"
    plain = oip.InferenceServerClient(f"127.0.0.1:{https.grpc_port}")
    with pytest.raises(oip.InferenceServerException):
        plain.is_server_live(client_timeout=5)


def test_bad_tls_options_fail_before_binding(ca: trustme.CA, tmp_path: Path) -> None:
    cert, key = write_pair(ca, tmp_path, "one")
    _, other_key = write_pair(ca, tmp_path, "two")
    port = str(free_port())
    cases = [
        (["--tls-cert", str(cert)], "--tls-cert needs --tls-key"),
        (["--tls-key", str(key)], "--tls-key needs --tls-cert"),
        (["--tls-cert", str(tmp_path / "absent.crt"), "--tls-key", str(key)],
         "absent.crt: cannot be read"),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)], "are not a PEM certificate"),
        (["--tls-cert", str(key), "--tls-key", str(key)], "are not a PEM certificate"),
    ]
    for options, message in cases:
        done = cli(tmp_path / "data", "serve", "--port", port, *options, check=False)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "invalid_request" in done.stderr
        assert "coordinator serve:" not in done.stderr  # never got as far as serving
