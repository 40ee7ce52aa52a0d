"""Deploy options: the per-resource engine settings a deployer passes to ``deploy``.

The core only checks their shape (a mapping of option names to JSON values) and that the
engine took them: an engine accepting options checks each in its ``inspect`` and returns
them, normalised, as ``meta["options"]``, so they are stored with the resource and survive a
reopen like the rest of its metadata. Options an engine did not return are refused with
``invalid_request`` naming them, so a misspelt or unsupported setting never passes silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from coordinator_hookspecs import InvalidRequest, ResourceInfo


def check_options_shape(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as a plain dict, or ``InvalidRequest`` when it is not a mapping of
    option names to JSON-compatible values."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidRequest(f"options must be a mapping of option names to values, got "
                             f"{type(options).__name__}")
    out: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not key:
            raise InvalidRequest(f"option names must be non-empty strings, got {key!r}")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise InvalidRequest(f"option {key!r} has a value that is not JSON "
                                 f"({type(value).__name__})") from None
        out[key] = value
    return out


def accepted_options(engine: str, asked: Mapping[str, Any], meta: Any) -> None:
    """Refuse the options the engine did not take (it returns those it took as
    ``meta["options"]``)."""
    if not asked:
        return
    taken = (meta or {}).get("options") or {}
    ignored = sorted(set(asked) - set(taken))
    if ignored:
        raise InvalidRequest(f"unknown deploy option {', '.join(map(repr, ignored))}: the "
                             f"{engine} engine does not take it")


def same_options(stored: ResourceInfo, meta: Mapping[str, Any]) -> None:
    """A redeploy of stored bytes must ask for the options they were stored with."""
    wanted = dict(meta.get("options") or {})
    if dict(stored.options) != wanted:
        raise InvalidRequest(
            f"resource {stored.id[:12]} is already deployed with options "
            f"{json.dumps(dict(stored.options), sort_keys=True)}; deploying it again with "
            f"{json.dumps(wanted, sort_keys=True)} is refused (the id names one resource)")
