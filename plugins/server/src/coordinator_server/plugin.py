"""Hook implementations of the server plugin (entry point ``server``): the ``coordinator
keys`` and ``coordinator serve`` commands."""

from __future__ import annotations

from coordinator_hookspecs import CliCommand, hookimpl
from coordinator_server.cli import KEYS, SERVE


@hookimpl
def coordinator_register_cli_commands() -> list[CliCommand]:
    return [KEYS, SERVE]
