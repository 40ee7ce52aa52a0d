"""The ``[server]`` config section: the limits that keep bad or slow clients from hurting the
service.

Example::

    [server]
    max_body_bytes = 67108864    # a larger request body gets 413, also when sent chunked
    max_json_bytes = 8388608     # the same for a JSON body (an infer, an execute)
    max_header_bytes = 16384     # a larger request line + headers gets 400
    header_timeout = 10.0        # seconds to send a request's line and headers: else 408
    body_timeout = 60.0          # seconds to send a request's whole body: else 408
    keep_alive_timeout = 5       # seconds an idle keep-alive connection stays open
    max_connections = 8192       # open connections; the next one gets 503

or ``COORDINATOR_SERVER__HEADER_TIMEOUT=5`` and the like in the environment.
"""

from __future__ import annotations

from typing import Any

import attrs

SECTION = "server"


def _positive(_i: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _int(default: int) -> Any:
    return attrs.field(default=default, converter=int, validator=_positive)


def _seconds(default: float) -> Any:
    return attrs.field(default=default, converter=float, validator=_positive)


@attrs.frozen
class ServerSettings:
    """Limits of the network service."""

    #: the largest request body accepted, in bytes (a deploy's bytes, an infer's JSON).
    max_body_bytes: int = _int(64 * 1024 * 1024)
    #: the largest JSON body (parsed JSON of numbers takes about nine times its size).
    max_json_bytes: int = _int(8 * 1024 * 1024)
    #: the largest request line plus headers, in bytes.
    max_header_bytes: int = _int(16 * 1024)
    #: from a connection's start (or its previous response) to a request's complete headers.
    header_timeout: float = _seconds(10.0)
    #: from a request's headers to the end of its body: a client needs at least
    #: ``max_body_bytes / body_timeout`` bytes per second to send the largest body.
    body_timeout: float = _seconds(60.0)
    #: how long an idle keep-alive connection stays open between requests.
    keep_alive_timeout: int = _int(5)
    #: open connections at once; a connection beyond them is answered 503 and closed.
    max_connections: int = _int(8192)
