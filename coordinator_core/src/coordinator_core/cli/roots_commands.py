"""Built-in plugin: state roots, proofs and snapshots on the command line.

``state root [RID]`` prints a resource's committed state root, or the global root without
RID; ``state prove RID KEY`` prints the committed value and the proof object (always JSON:
it is what a client hands to ``coordinator_hookspecs.verify_proof``). Both are actions of the
``state`` command of ``store_commands.py``, which hands them here. ``snapshot export FILE`` and
``snapshot import FILE [--expect-root HEX]`` write and restore a snapshot
(``store/snapshot.py``). Exit codes: 0 ok, 1 not found, 2 bad input (a refused snapshot).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import attrs

from coordinator_core.cli.output import emit, readable, to_jsonable
from coordinator_hookspecs import CliCommand, InvalidRequest, hookimpl

Opener = Callable[[], Any]


def state_action(args: argparse.Namespace, open_coordinator: Opener, key: bytes | None) -> int:
    """``state root`` and ``state prove`` (``key``: the KEY argument as bytes)."""
    with open_coordinator() as coord:
        if args.action == "root":
            if args.resource_id is None:
                out: dict[str, Any] = {"global_root": coord.global_root()}
            else:
                out = {"resource_id": args.resource_id,
                       "state_root": coord.state_root(args.resource_id),
                       "global_root": coord.global_root()}
        else:
            if args.resource_id is None or key is None:
                raise InvalidRequest("state prove needs RID and KEY")
            out = coord.prove(args.resource_id, key)
    if args.json:
        emit(out)
    elif args.action == "root":
        print(out.get("state_root", out["global_root"]))
    else:
        value = out["value"]
        print(readable(bytes.fromhex(value)) if value is not None else "(absent)")
        print(json.dumps(out, indent=2))
    return 0


def _snapshot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["export", "import"],
                   help="export: write a snapshot; import: restore one into an empty directory")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--expect-root", metavar="HEX", default=None,
                   help="import: refuse unless the snapshot's global root is HEX")


def _snapshot(args: argparse.Namespace, open_coordinator: Opener) -> int:
    with open_coordinator() as coord:
        if args.action == "export":
            if args.expect_root is not None:
                raise InvalidRequest("--expect-root applies to snapshot import only")
            out: dict[str, Any] = coord.export_snapshot(args.file)
        else:
            record = coord.import_snapshot(args.file, args.expect_root)
            out = to_jsonable(attrs.asdict(record))
    if args.json:
        emit(out)
    elif args.action == "export":
        print(f"snapshot written to {args.file}: {out['resources']} resources, global root "
              f"{out['global_root']}, chain head {out['chain']['head']} "
              f"(record {out['chain']['seq']})")
    else:
        detail = out["detail"]
        print(f"snapshot imported: {detail['resources']} resources, {detail['keys']} keys, "
              f"global root {detail['global_root']} (source chain head "
              f"{detail['source_head']}, record {detail['source_seq']})")
    return 0


@hookimpl
def coordinator_register_cli_commands() -> list[CliCommand]:
    return [CliCommand("snapshot", "snapshot export FILE | snapshot import FILE",
                       _snapshot_args, _snapshot)]
