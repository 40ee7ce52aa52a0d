"""The ``[server]`` config section.

Example::

    [server]
    max_body_bytes = 67108864   # a larger request body gets 413

or ``COORDINATOR_SERVER__MAX_BODY_BYTES=1048576`` in the environment.
"""

from __future__ import annotations

from typing import Any

import attrs

SECTION = "server"


def _positive(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen
class ServerSettings:
    """Limits of the network service."""

    #: the largest request body accepted, in bytes (a deploy's bytes, an infer's JSON).
    max_body_bytes: int = attrs.field(default=64 * 1024 * 1024, converter=int,
                                      validator=_positive)
