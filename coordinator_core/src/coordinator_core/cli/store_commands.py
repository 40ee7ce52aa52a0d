"""Built-in plugin: CLI commands that read the store.

``resources`` (list deployed resources), ``state get RID [KEY]`` (``state root`` and
``state prove``: ``roots_commands.py``), ``events RID [--limit N]``,
``audit verify`` (exit 1 naming the first bad sequence number) and ``audit show [--from N]``.
Every command takes ``--json`` (added by the CLI to each sub-command). Bytes are printed as
text when they are printable UTF-8 and as ``0x``-prefixed hex otherwise; in JSON as a string
or ``{"hex": ...}``. Exit codes: 0 ok, 1 failure (not found, verify failed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import attrs

from coordinator_core.cli.output import emit, readable, to_jsonable
from coordinator_core.cli.roots_commands import state_action
from coordinator_core.store.files import check_id
from coordinator_hookspecs import CliCommand, InvalidRequest, NotFound, hookimpl

Opener = Callable[[], Any]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _key(args: argparse.Namespace) -> bytes | None:
    if args.key is None:
        return None
    if not args.hex_key:
        return str(args.key).encode("utf-8")
    try:
        return bytes.fromhex(args.key.removeprefix("0x"))
    except ValueError:
        raise InvalidRequest(f"--hex-key given but KEY {args.key!r} is not hex") from None


def _known(coord: Any, resource_id: str) -> None:
    if coord.store.get_resource(check_id(resource_id)) is None:
        raise NotFound(f"no resource with id {resource_id}")


# -- resources -------------------------------------------------------------------------------
def _resources(args: argparse.Namespace, open_coordinator: Opener) -> int:
    with open_coordinator() as coord:
        infos = coord.store.list_resources()
    if args.json:
        emit([{**attrs.asdict(info, value_serializer=lambda _i, _a, v: to_jsonable(v)),
               "options": to_jsonable(dict(info.options))} for info in infos])
        return 0
    for info in infos:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.deployed_at))
        caps = ",".join(sorted(info.capabilities)) or "-"
        options = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}"
                           for k, v in sorted(info.options.items()))
        print(f"{info.id}  {info.type:<5} {info.name or '-':<16} owner={info.owner or '-'} "
              f"size={info.size} caps={caps} {when}" + (f" options: {options}" if options
                                                        else ""))
    return 0


# -- state -----------------------------------------------------------------------------------
def _state_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["get", "root", "prove"],
                   help="get: print one key, or all of them; root: the state root (the "
                        "global root without RID); prove: a key's value and proof")
    p.add_argument("resource_id", metavar="RID", nargs="?")
    p.add_argument("key", metavar="KEY", nargs="?", help="the key as text (all keys if omitted)")
    p.add_argument("--hex-key", action="store_true", help="KEY is hex, not text")


def _state(args: argparse.Namespace, open_coordinator: Opener) -> int:
    key = _key(args)
    if args.action != "get":
        return state_action(args, open_coordinator, key)
    if args.resource_id is None:
        raise InvalidRequest("state get needs RID")
    with open_coordinator() as coord:
        _known(coord, args.resource_id)
        if key is None:
            items = coord.store.state_items(args.resource_id)
        else:
            value = coord.store.state_get(args.resource_id, key)
            if value is None:
                raise NotFound(f"resource {args.resource_id} has no state key {readable(key)!r}")
            items = [(key, value)]
    if args.json:
        emit({"resource_id": args.resource_id,
              "items": [{"key": to_jsonable(k), "value": to_jsonable(v)} for k, v in items]})
    elif key is not None:
        print(readable(items[0][1]))
    else:
        for k, v in items:
            print(f"{readable(k)} = {readable(v)}")
    return 0


# -- events ----------------------------------------------------------------------------------
def _events_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("resource_id", metavar="RID")
    p.add_argument("--limit", type=_positive, default=100, help="the latest N (default 100)")


def _events(args: argparse.Namespace, open_coordinator: Opener) -> int:
    with open_coordinator() as coord:
        _known(coord, args.resource_id)
        events = coord.store.events(args.resource_id, args.limit)
    if args.json:
        emit([to_jsonable(event) for event in events])
        return 0
    for event in events:
        level = f" {event['level']}" if event["level"] else ""
        print(f"{event['seq']:>6} {event['execution_id']} {event['kind']}{level}: "
              f"{readable(event['payload'])}")
    return 0


# -- audit -----------------------------------------------------------------------------------
def _audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["verify", "show"],
                   help="verify: walk the hash chain; show: print records")
    p.add_argument("--from", dest="start", type=_positive, default=1, metavar="N",
                   help="show: start at sequence number N")
    p.add_argument("--limit", type=_positive, default=None, help="show: at most N records")


def _audit(args: argparse.Namespace, open_coordinator: Opener) -> int:
    with open_coordinator() as coord:
        if args.action == "verify":
            return _verify(coord.store.verify(), args.json)
        records: list[Any] = []
        for record in coord.store.audit_records(args.start):
            if args.limit is not None and len(records) >= args.limit:
                break
            records.append(record)
    if args.json:
        emit([to_jsonable(attrs.asdict(r)) for r in records])
        return 0
    for r in records:
        error = f" {r.error_kind}: {r.message}" if r.error_kind else ""
        print(f"{r.seq:>6} {r.record_kind:<9} {r.status or '-':<10} "
              f"{r.execution_id or r.resource_id or '-'} "
              f"caller={r.caller or '-'} fee={r.fee_used}{error}")
    return 0


def _verify(report: Any, as_json: bool) -> int:
    if as_json:
        emit(attrs.asdict(report))
    elif report.ok:
        print(f"audit log intact: {report.count} records, head {report.head}")
    else:
        print(f"audit log TAMPERED at record {report.first_bad_seq}: {report.reason} "
              f"({report.count} records before it verified)")
    return 0 if report.ok else 1


@hookimpl
def coordinator_register_cli_commands() -> list[CliCommand]:
    return [
        CliCommand("resources", "list deployed resources", lambda _p: None, _resources),
        CliCommand("state", "committed state: state get RID [KEY] | root [RID] | prove RID KEY",
                   _state_args, _state),
        CliCommand("events", "a resource's latest events and logs", _events_args, _events),
        CliCommand("audit", "the audit log: audit verify | audit show [--from N]",
                   _audit_args, _audit),
    ]
