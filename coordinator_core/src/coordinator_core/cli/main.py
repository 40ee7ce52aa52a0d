"""The ``coordinator`` command line.

Sub-commands come from plugins like everything else (``coordinator_register_cli_commands``;
the core's own are in ``cli/core_commands.py``). ``plugins`` and ``config show`` are built in
here because they must work without opening the store. Exit codes: 0 success, 1 execution
failed or was rejected, 2 usage or bad input. Logging goes to stderr through loguru, set up
here and only here (libraries never add handlers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from coordinator_core.cli.output import emit, fail, to_jsonable
from coordinator_core.engines.executors import describe_executors
from coordinator_core.log import configure_on_import
from coordinator_core.plugin_host.bootstrap import (
    Loaded,
    bootstrap,
    build,
    load_plugins,
    required_problems,
)
from coordinator_core.plugin_host.config import load_config
from coordinator_core.plugin_host.host import PluginError
from coordinator_core.plugin_host.registry import Conflict, collect_cli_commands
from coordinator_hookspecs import CoordinatorError, ErrorKind

if TYPE_CHECKING:
    from loguru import Logger

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with exit code 2 and a one-line message."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _global_options(sub: bool = False) -> _Parser:
    """Options accepted before and after the sub-command. On sub-parsers their defaults are
    suppressed, so a value given before the sub-command is not reset by the sub-parser."""
    parser = _Parser(add_help=False)
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if sub else {}
    parser.add_argument(
        "--data-dir",
        help="data directory (default: $COORDINATOR_DATA_DIR, else ~/.local/share/coordinator)",
        **unset,
    )
    parser.add_argument("--config", help="TOML config file (default: $COORDINATOR_CONFIG)", **unset)
    counts: dict[str, Any] = unset or {"default": 0}
    parser.add_argument("-v", "--verbose", action="count", help="more log output", **counts)
    parser.add_argument("-q", "--quiet", action="count", help="less log output", **counts)
    return parser


def _json_option() -> _Parser:
    parser = _Parser(add_help=False)
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def setup_logging(verbose: int, quiet: int) -> None:
    """The CLI's loguru handler on stderr: warnings by default, -v info, -vv debug. Installed
    when loguru is imported (at once if it is already): a command that logs nothing never
    imports it."""
    level = {-2: "CRITICAL", -1: "ERROR", 0: "WARNING", 1: "INFO"}.get(
        max(-2, min(verbose - quiet, 2)), "DEBUG"
    )

    def configure(logger: Logger) -> None:
        logger.remove()
        logger.add(
            sys.stderr,
            level=level,
            format="<level>{level: <7}</level> {message}",
            backtrace=False,
            diagnose=False,
        )

    configure_on_import(configure)


def build_parser(commands: dict[str, tuple[str, Any]]) -> argparse.ArgumentParser:
    common = [_global_options(sub=True), _json_option()]
    parser = _Parser(
        prog="coordinator",
        description="Execute WebAssembly contracts and ONNX models through one safe pipeline.",
        parents=[_global_options()],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    plugins = sub.add_parser("plugins", parents=common, help="list plugins and what they register")
    plugins.set_defaults(handler=_cmd_plugins)
    config = sub.add_parser("config", parents=common, help="configuration")
    config_sub = config.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    config_sub.required = True
    show = config_sub.add_parser("show", parents=common, help="print the effective config")
    show.set_defaults(handler=_cmd_config_show)
    for name, (plugin, command) in sorted(commands.items()):
        p = sub.add_parser(name, parents=common, help=f"{command.help} [{plugin}]")
        command.add_arguments(p)
        p.set_defaults(plugin_command=command)
    return parser


class _Session:
    """One CLI command's plugins, loaded once: ``plugins``, ``config show`` and every
    ``open_coordinator()`` of a plugin command share them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config = load_config(args.config, data_dir=args.data_dir)
        self.host = load_plugins(self.config)
        self.conflicts: list[Conflict] = []
        self.commands = collect_cli_commands(self.host, self.conflicts)
        self._built = False

    def loaded(self, *, keep_conflicts: bool = False) -> Loaded:
        """The records, built once; a second ``open_coordinator()`` loads afresh (the first
        coordinator closed the engines)."""
        if self._built:
            config = load_config(self.args.config, data_dir=self.args.data_dir)
            return bootstrap(config, warn_unknown=False)
        self._built = True
        return build(self.config, self.host, keep_conflicts=keep_conflicts)

    def opener(self) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        """``open_coordinator`` for plugin commands: a Coordinator honouring the global
        options, on the plugins already loaded."""

        @contextlib.contextmanager
        def open_coordinator() -> Iterator[Any]:
            # Imported here: ``--help``, ``plugins`` and ``config show`` never need it.
            from coordinator_core.coordination.coordinator import Coordinator

            if self.conflicts:
                raise PluginError("; ".join(str(c) for c in self.conflicts))
            with Coordinator.from_loaded(self.loaded()) as coordinator:
                yield coordinator

        return open_coordinator


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    early, _ = _global_options().parse_known_args(argv)
    setup_logging(early.verbose, early.quiet)
    want_json = "--json" in argv
    try:
        session = _Session(early)
    except CoordinatorError as exc:
        return fail(exc, want_json, EXIT_USAGE)
    args = build_parser(session.commands).parse_args(argv)
    try:
        if hasattr(args, "plugin_command"):
            return int(args.plugin_command.run(args, session.opener()))
        return int(args.handler(args, session))
    except CoordinatorError as exc:
        code = EXIT_USAGE if exc.kind in (ErrorKind.INVALID_REQUEST,) else EXIT_FAILED
        return fail(exc, getattr(args, "json", False), code)
    except KeyboardInterrupt:
        return 130


def _cmd_plugins(args: argparse.Namespace, session: _Session) -> int:
    """The diagnosis command: every plugin, what it registered, and what is wrong (clashing
    names, required plugins not running). Exit 1 when something is wrong."""
    loaded = session.loaded(keep_conflicts=True)
    loaded.discard()  # only described: no coordinator will run these engines
    conflicts = [*session.conflicts, *loaded.registry.conflicts]
    required = required_problems(loaded.host, loaded.config.core.required_plugins)
    data: dict[str, Any] = {
        "plugins": loaded.host.describe(),
        "records": loaded.registry.describe(),
        "conflicts": [attrs.asdict(c) | {"message": str(c)} for c in conflicts],
        "required": required,
        "executors": describe_executors(loaded.registry, loaded.config),
    }
    code = EXIT_FAILED if conflicts or required else EXIT_OK
    if args.json:
        emit(data)
        return code
    for info in data["plugins"]:
        where = info["distribution"] or info["source"]
        version = f" {info['version']}" if info["version"] else ""
        line = f"{info['name']:<22} {info['status']:<9} {where}{version}  ({info['module']})"
        if info["error"]:
            line += f"\n{'':<23}error: {info['error']}"
        print(line)
    print()
    for kind, records in data["records"].items():
        if records:
            names = ", ".join(
                f"{r['name']} [{r['plugin']}]{' CONFLICT' if r.get('conflict') else ''}"
                for r in records
            )
            print(f"{kind.replace('_', ' ')}: {names}")
    selected = loaded.config.section("dispatch").executor
    for name, about in data["executors"].items():
        mark = " (selected)" if name == selected else ""
        details = ", ".join(f"{k} {json.dumps(v, default=str)}" for k, v in about.items()
                            if k != "description")
        print(f"executor {name}{mark}: {about['description']}" + (f"; {details}" if details
                                                                  else ""))
    for problem in [*map(str, conflicts), *required]:
        print(f"problem: {problem}")
    return code


def _cmd_config_show(args: argparse.Namespace, session: _Session) -> int:
    loaded = session.loaded(keep_conflicts=True)
    loaded.discard()
    data = to_jsonable(loaded.config.as_dict())
    if args.json:
        emit(data)
        return EXIT_OK
    print(f"# data_dir = {data.pop('data_dir')}")
    source = data.pop("source")
    print(f"# source = {source or '(defaults and environment)'}")
    for section, values in data.items():
        print(f"\n[{section}]")
        for key, value in (values or {}).items():
            print(f"{key} = {json.dumps(value)}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
