"""What the built-in quota policies share: modes, config checks, wait bounds, counters.

Not a plugin itself (it registers nothing); ``quota_rate``, ``quota_concurrency`` and
``quota_fee`` import it.

Every policy follows the same rules:

* limits are precomputed per caller at start-up, so ``acquire`` is one dict lookup, one lock
  acquisition and a few arithmetic operations;
* a limit of 0 means unlimited, and all defaults are unlimited, so a fresh install rejects
  nothing;
* nested (hybrid) executions (``request.parent_id`` set) pass through: their parent already
  holds the caller's quota, and counting them again would let a contract deadlock on its own
  concurrency slot or pay twice for the same fee;
* a wait never outlives ``min(deadline, now + max_wait)``, and the refusal after it is a
  ``QuotaExceeded`` whose ``source`` is the policy's name;
* a wait ends as soon as the execution's ``CancelToken`` is cancelled (``stopped``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from coordinator_hookspecs import (
    ERROR_OF_KIND,
    CancelToken,
    CoordinatorError,
    ErrorKind,
    InvalidRequest,
)

Mode = Literal["reject", "wait"]
MODES = ("reject", "wait")


def bad_config(section: str, key: str, problem: str) -> InvalidRequest:
    """An ``InvalidRequest`` naming the config key, e.g. ``[quota-rate].burst``."""
    return InvalidRequest(f"invalid configuration: [{section}].{key} {problem}")


def non_negative(section: str, key: str, value: float) -> float:
    """``value`` if it is a finite number >= 0, else a config error naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise bad_config(section, key, f"must be a finite number >= 0, got {value!r}")
    return value


def mode_of(section: str, key: str, value: str) -> str:
    if value not in MODES:
        raise bad_config(section, key, f"must be 'reject' or 'wait', got {value!r}")
    return value


def pick(override: Any, default: Any) -> Any:
    """A per-caller override, or the section default when the override is unset (None)."""
    return default if override is None else override


def wait_bound(now: float, deadline: float, max_wait: float) -> float:
    """The monotonic instant a wait must give up at."""
    return min(deadline, now + max_wait)


def default_fee_limit(config: Any) -> int:
    """The fee limit of a request that names none (``[coordinator].default_fee_limit``)."""
    return int(config.core.default_fee_limit)


def stopped(token: CancelToken, waiting_for: str, source: str) -> CoordinatorError:
    """The error ending a wait whose execution was cancelled (or timed out by the watchdog)
    meanwhile: its kind is the token's reason, as if the engine had been stopped."""
    reason = token.reason or ErrorKind.CANCELLED
    what = "cancelled" if reason is ErrorKind.CANCELLED else "deadline passed"
    return ERROR_OF_KIND[reason](f"{what} while {waiting_for}", source=source)
