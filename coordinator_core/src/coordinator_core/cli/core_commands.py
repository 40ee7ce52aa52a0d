"""Built-in plugin: the core CLI commands ``deploy``, ``exec``, ``query``, ``status``,
``cancel``, ``metrics``, registered through the same hook any plugin uses."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator_core.cli.output import effect_json, emit, result_json, to_jsonable
from coordinator_core.cli.summary import log_metrics, print_metrics
from coordinator_hookspecs import CliCommand, EngineBase, ExecutionRequest, InvalidRequest, hookimpl

if TYPE_CHECKING:
    from coordinator_core.engines.dispatcher import BoundEngine

Opener = Callable[[], Any]


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror or exc}") from None


# -- deploy ----------------------------------------------------------------------------------
def _deploy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the contract (.wasm, or .wat text) or model (.onnx)")
    p.add_argument("--type", dest="resource_type", required=True, help="resource type: wasm, onnx")
    p.add_argument("--name", default="", help="a readable name")
    p.add_argument("--owner", default="", help="the deployer (may change the access policy)")
    p.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="CAP",
        help="grant a host capability (repeatable): storage, events, log, models",
    )
    p.add_argument("--private", action="store_true", help="only the owner and --allow callers")
    p.add_argument("--allow", action="append", default=[], metavar="CALLER")
    p.add_argument("--deny", action="append", default=[], metavar="CALLER")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a deploy option of the engine (repeatable), e.g. max_batch_size=8; VALUE is "
        "read as JSON when it parses (8, [4,8], true), else as text",
    )


def _deploy_options(items: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` arguments as a mapping (``InvalidRequest`` for a malformed one)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidRequest(f"--option {item!r} is not KEY=VALUE")
        if key in options:
            raise InvalidRequest(f"--option {key!r} is given twice")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def _deploy(args: argparse.Namespace, open_coordinator: Opener) -> int:
    from coordinator_hookspecs import AccessPolicy

    raw = _read_file(args.file)
    code: bytes | str = raw
    source_format = "binary"
    if args.file.endswith(".wat"):
        try:
            code, source_format = raw.decode("utf-8"), "wat"
        except UnicodeDecodeError:
            raise InvalidRequest(f"{args.file} is not UTF-8 WAT text") from None
    policy = AccessPolicy(
        public=not args.private, allow=frozenset(args.allow), deny=frozenset(args.deny)
    )
    with open_coordinator() as coord:
        rid = coord.deploy(
            code,
            args.resource_type,
            name=args.name,
            capabilities=args.grant,
            owner=args.owner,
            policy=policy,
            source_format=source_format,
            options=_deploy_options(args.option),
        )
        info = coord.resource(rid)
    if args.json:
        emit(
            {
                "resource_id": rid,
                "type": info.type,
                "name": info.name,
                "size": info.size,
                "capabilities": sorted(info.capabilities),
                "owner": info.owner,
                "options": dict(info.options),
            }
        )
    else:
        print(rid)
    return 0


# -- exec, query -----------------------------------------------------------------------------
def _call_args(p: argparse.ArgumentParser) -> None:
    """The arguments of a call of a resource (``exec`` and ``query``)."""
    p.add_argument("resource_id", metavar="RID")
    p.add_argument("--entry", help="exported function (wasm; default main)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--input", help="input text (wasm: bytes as UTF-8; onnx: JSON)")
    group.add_argument("--input-file", help="input file (wasm: raw bytes; onnx: .npz or .json)")
    group.add_argument("--args", help="numeric arguments as a JSON list, e.g. '[2, 3]'")
    p.add_argument("--caller", default="cli", help="who is calling (default: cli)")
    p.add_argument("--fee-limit", type=int, help="fee limit (default from config)")
    p.add_argument("--timeout", type=float, help="seconds (capped by the configured maximum)")


def _exec_args(p: argparse.ArgumentParser) -> None:
    _call_args(p)
    p.add_argument("--simulate", action="store_true",
                   help="run it without committing anything; prints the fee it would use")


def _query_args(p: argparse.ArgumentParser) -> None:
    _call_args(p)


def _exec(args: argparse.Namespace, open_coordinator: Opener) -> int:
    return _call(args, open_coordinator, "simulate" if args.simulate else "execute")


def _query(args: argparse.Namespace, open_coordinator: Opener) -> int:
    return _call(args, open_coordinator, "query")


def _call(args: argparse.Namespace, open_coordinator: Opener, how: str) -> int:
    """Run the call ``args`` describe with ``coord.execute``, ``simulate`` or ``query``."""
    call_args = None
    if args.args is not None:
        try:
            call_args = json.loads(args.args)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"--args is not valid JSON: {exc}") from None
        if not isinstance(call_args, list):
            raise InvalidRequest("--args must be a JSON list, e.g. '[2, 3]'")
    with open_coordinator() as coord:
        engine = _engine_of(coord, args.resource_id)
        payload: Any = b""
        if args.input is not None:
            payload = engine.decode_cli_input(args.input, None)
        elif args.input_file is not None:
            payload = engine.decode_cli_input(_read_file(args.input_file), args.input_file)
        result = getattr(coord, how)(
            ExecutionRequest(
                resource_id=args.resource_id,
                caller=args.caller,
                entry=args.entry,
                input=payload,
                args=tuple(call_args) if call_args is not None else None,
                fee_limit=args.fee_limit,
                timeout=args.timeout,
            )
        )
        output = to_jsonable(
            engine.encode_output(result.output) if result.output is not None else None
        )
    data = result_json(result, output)
    if how == "simulate":
        data = {**data, "simulated": True, "state_root": result.state_root,
                "global_root": result.global_root,
                "events": [effect_json(e) for e in result.events]}
    if args.json:
        emit(data)
    else:
        line = (
            f"{data['status']}  fee={data['fee_used']}  {data['duration_ms']} ms  "
            f"cpu={data['cpu_ms']} ms  memory={data['memory_bytes']} B  "
            + ("simulated: nothing committed" if how == "simulate" else
               "query: nothing committed" if how == "query" else f"id={data['execution_id']}")
        )
        print(line)
        if result.error is not None:
            print(f"error: {data['error']['kind']}: {data['error']['message']}")
        elif output not in (None, "", [], {}):
            print(f"output: {output if isinstance(output, str) else json.dumps(output)}")
    return 0 if result.ok else 1


class _NoEngine(EngineBase):
    """Stands in for the engine of a resource that is not deployed (the execution then
    reports not_found): the default CLI input and output conversions."""


def _engine_of(coord: Any, resource_id: str) -> BoundEngine | _NoEngine:
    """The bound engine of a deployed resource (its CLI input and output helpers)."""
    try:
        bound: BoundEngine = coord.dispatcher.engines_for(coord.resource(resource_id).type)[0]
    except Exception:
        return _NoEngine()
    return bound


# -- status, cancel, metrics -----------------------------------------------------------------
def _id_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("execution_id", metavar="EXECUTION_ID")


def _status(args: argparse.Namespace, open_coordinator: Opener) -> int:
    with open_coordinator() as coord:
        status = coord.status(args.execution_id)
    data = {
        "execution_id": status.execution_id,
        "status": status.status.value,
        "resource_id": status.resource_id,
        "caller": status.caller,
        "error_kind": status.error_kind,
        "message": status.message,
        "fee_used": status.fee_used,
        "duration_ms": round(status.duration * 1e3, 3),
        "source": status.source,
    }
    if args.json:
        emit(data)
    else:
        print(
            f"{data['status']}  fee={data['fee_used']}  {data['duration_ms']} ms"
            + (f"  error: {data['error_kind']}: {data['message']}" if data["error_kind"] else "")
        )
    return 0


def _cancel(args: argparse.Namespace, open_coordinator: Opener) -> int:
    with open_coordinator() as coord:
        cancelled = coord.cancel(args.execution_id)
        status = coord.status(args.execution_id).status.value
    if args.json:
        emit({"execution_id": args.execution_id, "cancelled": cancelled, "status": status})
    else:
        print("cancelled" if cancelled else f"not cancelled: the execution is {status}")
    return 0 if cancelled else 1


def _metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--last",
        type=int,
        default=0,
        help="only the last N executions of the audit log (default: all)",
    )


def _metrics(args: argparse.Namespace, open_coordinator: Opener) -> int:
    with open_coordinator() as coord:
        snapshot = log_metrics(coord.store, last=args.last)
    if args.json:
        emit(snapshot)
    else:
        print_metrics(snapshot)
    return 0


@hookimpl
def coordinator_register_cli_commands() -> list[CliCommand]:
    return [
        CliCommand("deploy", "deploy a contract or model; prints its id", _deploy_args, _deploy),
        CliCommand("exec", "execute a deployed resource (--simulate: a dry run)", _exec_args,
                   _exec),
        CliCommand("query", "a read-only call of a deployed resource; commits nothing",
                   _query_args, _query),
        CliCommand("status", "status of an execution", _id_args, _status),
        CliCommand("cancel", "cancel an execution", _id_args, _cancel),
        CliCommand("metrics", "execution metrics from the audit log", _metrics_args, _metrics),
    ]
