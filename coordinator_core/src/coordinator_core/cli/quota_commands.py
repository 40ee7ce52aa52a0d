"""Built-in plugin: the ``quota status`` and ``policy`` CLI commands.

``coordinator quota status [CALLER]`` prints each quota policy's limits and usage (for one
caller: its effective limits even if it never ran). Usage is what this process has counted:
the CLI opens its own coordinator, so counts are those of a long-running process only when
the command runs inside it (``serve``); limits are always the configured ones.

``coordinator policy RID [--public | --private] [--allow C ...] [--deny C ...] --caller OWNER``
changes who may execute a resource. Options left out keep their current value; ``--allow``
or ``--deny`` with no names empties that list. Only the resource's owner may change it
(``Coordinator.set_policy`` refuses anyone else with ``security_rejected``, exit code 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from coordinator_core.cli.output import emit
from coordinator_hookspecs import AccessPolicy, CliCommand, hookimpl

Opener = Callable[[], Any]


# -- quota status ----------------------------------------------------------------------------
def _quota_args(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="quota_action", metavar="ACTION")
    actions.required = True
    status = actions.add_parser("status", help="limits and usage of every quota policy")
    status.add_argument("caller", nargs="?", metavar="CALLER", help="show one caller only")
    # Accepted after the action too; SUPPRESS keeps a --json given before it.
    status.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON")


def policy_snapshots(coord: Any, caller: str | None = None) -> dict[str, Any]:
    """Each quota policy's ``snapshot()`` (``snapshot(caller)`` when it accepts one)."""
    out: dict[str, Any] = {}
    for name, bound in coord.quota.snapshots:
        if bound is None:
            out[name] = {"policy": name, "snapshot": "not provided"}
            continue
        takes_caller = caller is not None and bound.takes_caller
        data = bound.snapshot(caller) if takes_caller else bound.snapshot()
        if caller is not None and not takes_caller and isinstance(data.get("callers"), dict):
            data = {**data, "callers": {k: v for k, v in data["callers"].items() if k == caller}}
        out[name] = data
    return out


def _quota(args: argparse.Namespace, open_coordinator: Opener) -> int:
    with open_coordinator() as coord:
        data = policy_snapshots(coord, args.caller)
    if getattr(args, "json", False):
        emit({"caller": args.caller, "policies": data})
        return 0
    if not data:
        print("no quota policies are registered")
    for name, snap in data.items():
        print(name)
        for key, value in snap.items():
            if key in ("policy", "callers"):
                continue
            print(f"  {key}: {_flat(value)}")
        for who, usage in (snap.get("callers") or {}).items():
            print(f"  caller {who}: {_flat(usage)}")
    return 0


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- policy ----------------------------------------------------------------------------------
def _policy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("resource_id", metavar="RID")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--public", dest="public", action="store_const", const=True,
                            default=None, help="everyone not denied may execute it")
    visibility.add_argument("--private", dest="public", action="store_const", const=False,
                            help="only the owner and the allow list may execute it")
    parser.add_argument("--allow", nargs="*", action="extend", metavar="CALLER",
                        help="replace the allow list (no names: empty it)")
    parser.add_argument("--deny", nargs="*", action="extend", metavar="CALLER",
                        help="replace the deny list (no names: empty it); deny wins")
    parser.add_argument("--caller", required=True, metavar="OWNER",
                        help="who asks; must be the resource's owner")


def _policy(args: argparse.Namespace, open_coordinator: Opener) -> int:
    with open_coordinator() as coord:
        current = coord.resource(args.resource_id).policy
        policy = AccessPolicy(
            public=current.public if args.public is None else args.public,
            allow=current.allow if args.allow is None else frozenset(args.allow),
            deny=current.deny if args.deny is None else frozenset(args.deny),
        )
        info = coord.set_policy(args.resource_id, policy, caller=args.caller)
    data = {"resource_id": info.id, "owner": info.owner, "public": info.policy.public,
            "allow": sorted(info.policy.allow), "deny": sorted(info.policy.deny)}
    if getattr(args, "json", False):
        emit(data)
    else:
        print(f"{info.id}  {'public' if data['public'] else 'private'}  "
              f"allow: {', '.join(data['allow']) or '-'}  deny: {', '.join(data['deny']) or '-'}")
    return 0


@hookimpl
def coordinator_register_cli_commands() -> list[CliCommand]:
    return [
        CliCommand("quota", "quota limits and usage: quota status [CALLER]", _quota_args, _quota),
        CliCommand("policy", "change who may execute a resource (owner only)", _policy_args,
                   _policy),
    ]
