"""How the CLI prints: JSON for ``--json``, short readable text otherwise."""

from __future__ import annotations

import enum
import json
import sys
from typing import Any

from coordinator_hookspecs import CoordinatorError, Effect, ExecutionResult


def to_jsonable(value: Any) -> Any:
    """Plain JSON data from results, effects, bytes (readable UTF-8 text, else
    ``{"hex": ...}``) and arrays."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": raw.hex()}
        # Text only when a person can read it: binary that happens to be valid UTF-8 (a
        # little-endian integer full of NULs) is shown as hex too.
        return text if _texty(text) else {"hex": raw.hex()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return value


def readable(raw: bytes) -> str:
    """Bytes for a terminal: the text when it is printable UTF-8, else ``0x`` and the hex
    (a little-endian counter is valid UTF-8 but would print as control characters)."""
    value = to_jsonable(raw)
    return value if isinstance(value, str) else "0x" + value["hex"]


def _texty(text: str) -> bool:
    return all(c.isprintable() or c in "\n\r\t" for c in text)


def effect_json(effect: Effect) -> dict[str, Any]:
    return {
        "kind": effect.kind,
        "resource_id": effect.resource_id,
        "key": to_jsonable(effect.key),
        "value": to_jsonable(effect.value),
    }


def result_json(result: ExecutionResult, output: Any) -> dict[str, Any]:
    """A result as JSON; ``output`` already encoded by the engine (or by ``to_jsonable``)."""
    return {
        "execution_id": result.execution_id,
        "status": result.status.value,
        "resource_id": result.resource_id,
        "caller": result.caller,
        "output": output,
        "fee_used": result.fee_used,
        "effects": [effect_json(e) for e in result.effects],
        "error": None
        if result.error is None
        else {
            "kind": result.error.kind.value,
            "message": result.error.message,
            "source": result.error.source,
        },
        "engine": result.engine,
        "duration_ms": round(result.duration * 1e3, 3),
        "parent_id": result.parent_id,
        "cpu_ms": round(result.cpu_seconds * 1e3, 3),
        "memory_bytes": result.memory_bytes,
        "usage": dict(result.usage) if result.usage else None,
    }


def emit(data: Any) -> None:
    print(json.dumps(to_jsonable(data), indent=2, sort_keys=False))


def fail(exc: CoordinatorError, as_json: bool, code: int) -> int:
    """Report a typed error (stdout JSON with --json, stderr text otherwise) and return code."""
    if as_json:
        emit({"error": {"kind": exc.kind.value, "message": exc.message, "source": exc.source}})
    else:
        source = f" [{exc.source}]" if exc.source else ""
        print(f"error: {exc.kind.value}: {exc.message}{source}", file=sys.stderr)
    return code
