"""Built-in plugin: ``coordinator replay --data-dir SRC --into DST [--until SEQ]``.

Re-executes the log of SRC into the new directory DST with the current config and compares
each execution with its record (docs/replay.md). Exit codes: 0 all identical, 1 a divergence
(the first one named: seq, execution id, what differed), 2 the replay could not start (the
source's chain does not verify, a request was not kept, DST is not empty).
"""

from __future__ import annotations

import argparse
from typing import Any

import attrs

from coordinator_core.cli.output import emit
from coordinator_core.plugin_host.config import load_config
from coordinator_core.replay import replay
from coordinator_core.replay.runner import Report
from coordinator_hookspecs import CliCommand, hookimpl


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a record number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive record number, got {value}")
    return value


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--into", required=True, help="a new directory to replay into")
    parser.add_argument("--until", type=_positive, metavar="SEQ",
                        help="stop after audit record SEQ of the source")


def _replay(args: argparse.Namespace, _open_coordinator: Any) -> int:
    source = load_config(args.config, data_dir=args.data_dir).data_dir
    report = replay(source, args.into, config_path=args.config, until=args.until)
    if args.json:
        emit({"ok": report.ok, **attrs.asdict(report)})
    else:
        print(_text(report))
    return 0 if report.ok else 1


def _text(report: Report) -> str:
    lines = [f"replayed {report.source} into {report.into}: {report.records} records "
             f"({report.replayed} executions re-run, {report.recorded} written as recorded, "
             f"{report.deploys} deploys, {report.policies} policy changes)"]
    lines += [f"note: {note}" for note in report.notes]
    found = report.divergence
    if found is None:
        lines.append(f"identical through record {report.identical_through}")
        return "\n".join(lines)
    what = "; ".join(f"{name}: source {d['source']!r}, replay {d['replay']!r}"
                     for name, d in found["differences"].items())
    lines.append(f"DIVERGED at record {found['seq']} ({found['record_kind']} "
                 f"{found['execution_id'] or found['resource_id']}): {what}")
    if found.get("replay_message") or found.get("source_message"):
        lines.append(f"  source message: {found.get('source_message')!r}; replay message: "
                     f"{found.get('replay_message')!r}")
    return "\n".join(lines)


@hookimpl
def coordinator_register_cli_commands() -> list[CliCommand]:
    return [CliCommand("replay", "re-execute the log into a fresh directory and compare",
                       _args, _replay)]
