"""The ``[prometheus]`` config section.

Example::

    [prometheus]
    port = 9464            # serve /metrics here while the coordinator is open (0: do not)
    addr = "127.0.0.1"     # loopback by default: metrics name callers and resources

or ``COORDINATOR_PROMETHEUS__PORT=9464`` in the environment.
"""

from __future__ import annotations

from typing import Any

import attrs

#: Latency buckets (seconds): 50 us to 30 s, covering a trivial contract's pipeline
#: (about 0.1 ms) up to the default maximum timeout.
DEFAULT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Memory buckets (bytes): 1 KiB to 4 GiB in steps of 4 (a wasm page is 64 KiB).
MEMORY_BUCKETS = tuple(float(1024 * 4**i) for i in range(12))


def _port(_i: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be 0-65535 (0: do not serve), got {value!r}")


def _floats(value: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in value)


def _buckets(_i: object, attribute: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
    if not value or any(b <= 0 for b in value) or list(value) != sorted(set(value)):
        raise ValueError(f"{attribute.name} must be positive and strictly increasing, "
                         f"got {list(value)!r}")


@attrs.frozen
class PrometheusSettings:
    """Where to serve ``/metrics`` and the latency histogram buckets."""

    #: TCP port of the ``/metrics`` endpoint; 0 or unset: do not serve (the sink still
    #: records, for ``coordinator serve-metrics`` or an embedding application).
    port: int | None = attrs.field(default=None, validator=_port)
    #: address to bind; keep the loopback default unless a scraper elsewhere needs it.
    addr: str = "127.0.0.1"
    #: upper bounds (seconds) of the latency histogram buckets.
    buckets: tuple[float, ...] = attrs.field(default=DEFAULT_BUCKETS,
                                             converter=_floats,
                                             validator=_buckets)
