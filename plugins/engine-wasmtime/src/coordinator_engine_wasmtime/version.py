"""The wasmtime release whose C API ``_capi.py`` declares, checked without importing wasmtime.

The plugin imports this module when it loads, so an installation with another release fails
to load the plugin (``coordinator plugins`` lists the reason) rather than at the first
execution, although the engine itself is only built on first use.
"""

from __future__ import annotations

from importlib import metadata

#: The release whose raw C-API prototypes ``_capi.py`` declares.
REQUIRED = "50.0.1"

WASMTIME_VERSION = metadata.version("wasmtime")
if WASMTIME_VERSION != REQUIRED:
    raise ImportError(
        f"coordinator-engine-wasmtime needs wasmtime=={REQUIRED} (its raw C-API prototypes are "
        f"that release's), found {WASMTIME_VERSION}"
    )
