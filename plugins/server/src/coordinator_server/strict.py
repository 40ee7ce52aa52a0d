"""The shape checks of a strict API, made before a request reaches the pipeline.

A field the API does not know is refused with 400 naming it (a typo such as ``fee_limt``
would otherwise be silently ignored); numbers must be JSON numbers of the right kind, finite
and in range; names that end up in URLs are plain tokens. Values the pipeline itself checks
against configuration (the fee and timeout bounds of the request validator, the model
signature) are left to it, so each limit has one source.

OIP ``parameters`` objects keep any key: the protocol's extensions and client libraries put
their own there (``binary_data``, ``binary_data_output``...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.requests import Request

from coordinator_hookspecs import InvalidRequest
from coordinator_server.app import UnsupportedMediaType

INFER_FIELDS = frozenset({"id", "inputs", "outputs", "parameters", "caller"})  # caller: own
TENSOR_FIELDS = frozenset({"name", "shape", "datatype", "data", "parameters"})
OUTPUT_FIELDS = frozenset({"name", "parameters"})
#: media types a JSON route reads: JSON itself, none at all, and the two that generic
#: clients send by default with a JSON body (``curl -d``, a bare byte upload).
JSON_MEDIA = frozenset({"", "application/json", "text/json", "application/x-www-form-urlencoded",
                        "application/octet-stream"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def fields(obj: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """``InvalidRequest`` naming the first fields of ``obj`` not in ``known``."""
    allowed = frozenset(known)
    unknown = sorted(str(k)[:64] for k in obj if k not in allowed)
    if unknown:
        raise InvalidRequest(f"{where}: unknown field {', '.join(map(repr, unknown[:5]))}; "
                             f"the fields are {', '.join(sorted(allowed))}")


def json_media(request: Request) -> None:
    """415 for a body declared as something other than JSON (a form upload, XML...)."""
    declared = request.headers.get("content-type", "")
    media = declared.split(";", 1)[0].strip().lower()
    if media not in JSON_MEDIA and not media.endswith("+json"):
        raise UnsupportedMediaType(f"this route reads a JSON body, not {declared[:80]!r} "
                                   "(Content-Type: application/json)")


def infer_body(body: Any) -> None:
    """The fields and their types of an OIP infer request (tensor contents are checked when
    they are decoded)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the infer request must be a JSON object with 'inputs'")
    fields(body, INFER_FIELDS, "the infer request")
    if "id" in body and not isinstance(body["id"], str):
        raise InvalidRequest("'id' must be a string (it is echoed in the response)")
    _parameters(body.get("parameters"), "the infer request")
    for group, known in (("inputs", TENSOR_FIELDS), ("outputs", OUTPUT_FIELDS)):
        items = body.get(group)
        if items is None or not isinstance(items, list):
            continue  # absent or not a list: the decoder says what is wrong
        for i, item in enumerate(items):
            if isinstance(item, Mapping):
                fields(item, known, f"{group}[{i}]")
                _parameters(item.get("parameters"), f"{group}[{i}]")


def _parameters(value: Any, where: str) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise InvalidRequest(f"{where}: 'parameters' must be an object")


def fee_limit(value: Any, where: str = "fee_limit") -> int | None:
    """A fee limit: absent (None) or a positive integer (its upper bound is the request
    validator's ``max_fee_limit``)."""
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise InvalidRequest(f"{where} must be a positive integer, got {str(value)[:40]}")
    return value


def timeout(value: Any, where: str = "timeout") -> float | None:
    """A timeout in seconds: absent (None) or a finite number above 0 (the core caps it at
    its maximum)."""
    if value is None:
        return None
    try:
        ok = type(value) in (int, float) and math.isfinite(value) and value > 0
    except OverflowError:  # an integer too large for a float
        ok = False
    if not ok:
        raise InvalidRequest(f"{where} must be a finite number of seconds above 0, got "
                             f"{str(value)[:40]}")
    return float(value)


def resource_name(name: str) -> str:
    """A resource's name as the OIP routes address it: one URL path segment."""
    if name and not _NAME.match(name):
        raise InvalidRequest(f"the name {name[:64]!r} must be 1-128 letters, digits, '.', '_' "
                             "or '-', starting with a letter or digit")
    return name
