"""``coordinator serve --tls-cert F --tls-key F``: HTTPS on the service's port.

uvicorn loads the certificate only as it starts serving, where a bad file would end the
process with a traceback after the coordinator had begun to open. So the pair is checked
here first, the way uvicorn will load it (an ``ssl`` server context): both options or
neither, each file readable, and the key matching the certificate; anything else is
``InvalidRequest`` naming the file, before any port is bound.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs

from coordinator_hookspecs import InvalidRequest


@attrs.frozen
class TlsFiles:
    """A checked certificate chain and private key (PEM files)."""

    cert: str
    key: str


def _readable(option: str, path: str) -> None:
    try:
        with Path(path).open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise InvalidRequest(f"{option} {path}: cannot be read ({exc.strerror or exc})"
                             ) from None


def check_tls(cert: str | None, key: str | None) -> TlsFiles | None:
    """The TLS files to serve with (None: plain HTTP), or ``InvalidRequest``."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key",
                                                                          "--tls-cert")
        raise InvalidRequest(f"{given} needs {missing} too: HTTPS takes a certificate and "
                             "its private key")
    _readable("--tls-cert", cert)
    _readable("--tls-key", key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An empty password: an encrypted key fails here instead of prompting on a terminal.
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        raise InvalidRequest(f"--tls-cert {cert} and --tls-key {key} are not a PEM certificate "
                             f"and its unencrypted private key ({exc.reason or exc})") from None
    return TlsFiles(cert=cert, key=key)
