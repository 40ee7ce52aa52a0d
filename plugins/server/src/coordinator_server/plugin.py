"""Hook implementations of the server plugin (entry point ``server``): the ``[server]``
config section and the ``coordinator keys`` and ``coordinator serve`` commands."""

from __future__ import annotations

from coordinator_hookspecs import CliCommand, ConfigSection, hookimpl
from coordinator_server.cli import KEYS, SERVE
from coordinator_server.settings import SECTION, ServerSettings


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=SECTION, type=ServerSettings)]


@hookimpl
def coordinator_register_cli_commands() -> list[CliCommand]:
    return [KEYS, SERVE]
