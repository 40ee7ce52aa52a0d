"""Where configuration comes from: the TOML file, ``COORDINATOR_*`` variables, overrides.

Each source is read into plain data shaped like the file, with plugin sections under their
canonical name (``-`` and ``_`` are one character in section names, so
``COORDINATOR_AUDIT_JSONL__PATH`` reaches ``[audit_jsonl]`` and
``COORDINATOR_ENTRY_GUARD__RISK_PER_KIB`` reaches ``[entry-guard]``), then merged: the file,
then the environment, then overrides. Where each section was written is kept, so a warning
about a section no plugin declares can point at it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordinator_hookspecs import InvalidRequest

ENV_PREFIX = "COORDINATOR_"
#: Environment variables with their own meaning, never read as config keys.
_RESERVED_ENV = frozenset({"DATA_DIR", "CONFIG", "DISABLE_PLUGINS", "STRICT_PLUGINS", "LOG_LEVEL"})
#: Sections of the core, never renamed.
_OWN_SECTIONS = ("coordinator", "records")


def read_sources(
    path: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], Path | None, dict[str, str]]:
    """The merged data of every source, the file it came from, and where each plugin
    section was written (canonical name -> ``[name] in FILE`` or a variable name)."""
    path = path or environ.get(ENV_PREFIX + "CONFIG") or None
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        import tomllib  # here: most commands run without a config file or variables

        source = Path(path)
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidRequest(f"config file {source} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"config file {source} is not valid TOML: {exc}") from None
    origins: dict[str, str] = {}
    data = _canonical(data, origins, f" in {source}" if source else "")
    data = _merge(data, _env_overrides(environ, origins))
    if overrides:
        data = _merge(data, _canonical(overrides, origins, " in the overrides"))
    return data, source, origins


def _env_value(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def section_key(name: str) -> str:
    """The canonical form of a section name: ``-`` and ``_`` are one character."""
    return name.replace("-", "_")


def _env_overrides(
    environ: Mapping[str, str], origins: dict[str, str]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :]
        if key in _RESERVED_ENV or not key:
            continue
        section, _, field = key.partition("__")
        if field:
            section = section_key(section.lower())
            origins.setdefault(section, f"[{section}] (from {name})")
        else:
            section, field = "coordinator", section
        out.setdefault(section, {})[field.lower()] = _env_value(text)
    return out


def _canonical(data: Mapping[str, Any], origins: dict[str, str], where: str) -> dict[str, Any]:
    """``data`` with its plugin sections under canonical names (``[coordinator]`` and
    ``[records]`` as they are)."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        key = name
        if name not in _OWN_SECTIONS:
            key = section_key(name)
            origins.setdefault(key, f"[{name}]{where}")
        out = _merge(out, {key: value})
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged
