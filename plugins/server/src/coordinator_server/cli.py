"""``coordinator keys create|list|revoke`` and ``coordinator serve``.

Both find the data directory through the coordinator the CLI opens for them (so a
``data_dir`` set in the config file counts, as for every other command); the server also
serves that coordinator.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordinator_hookspecs import CliCommand, InvalidRequest
from coordinator_server.keys import SCOPES, KeyStore
from coordinator_server.tls import check_tls

Opener = Callable[[], Any]


def data_dir_of(args: argparse.Namespace, open_coordinator: Opener) -> Path:
    """The data directory the coordinator of these CLI options uses: ``--data-dir`` when
    given (it wins over the config file), else the one an opened coordinator resolves."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    with open_coordinator() as coord:
        return Path(coord.config.data_dir)


# -- keys ------------------------------------------------------------------------------------
def _keys_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_action", metavar="ACTION")
    sub.required = True
    create = sub.add_parser("create", help="add a key and print its token once")
    create.add_argument("name", help="the key's name: the caller of its requests")
    create.add_argument("--scope", choices=SCOPES, default="execute",
                        help="execute (default), deploy (also deploy), admin (everything), "
                        "view (only look at the dashboard, /ui)")
    sub.add_parser("list", help="list keys (never their tokens)")
    revoke = sub.add_parser("revoke", help="revoke a key: its token gets 401 from now on")
    revoke.add_argument("name")
    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def _keys(args: argparse.Namespace, open_coordinator: Opener) -> int:
    store = KeyStore(data_dir_of(args, open_coordinator))
    try:
        if args.keys_action == "create":
            token = store.create(args.name, args.scope)
            if args.json:
                print(json.dumps({"name": args.name, "scope": args.scope, "token": token}))
            else:
                print(token)
                print(f"key {args.name!r} (scope {args.scope}): the token above is shown only "
                      "now; keep it secret", file=sys.stderr)
        elif args.keys_action == "list":
            keys = store.list()
            if args.json:
                print(json.dumps([k.as_dict() for k in keys], indent=2))
            for key in keys if not args.json else ():
                print(f"{key.name:<24} {key.scope:<8} {'active' if key.active else 'revoked'}")
        else:
            key = store.revoke(args.name)
            print(json.dumps(key.as_dict()) if args.json else f"revoked {key.name}")
    finally:
        store.close()
    return 0


KEYS = CliCommand(name="keys", help="API keys of the network service (create, list, revoke)",
                  add_arguments=_keys_args, run=_keys)


# -- serve -----------------------------------------------------------------------------------
def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=None, metavar="PORT",
                        help="also serve the Open Inference Protocol over gRPC on this port")
    parser.add_argument("--no-auth", action="store_true",
                        help="accept requests without a key (loopback addresses only)")
    parser.add_argument("--grace", type=int, default=10, metavar="SECONDS",
                        help="on SIGTERM, how long in-flight requests may take (default 10)")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve HTTPS with this PEM certificate chain (needs --tls-key)")
    parser.add_argument("--tls-key", metavar="FILE",
                        help="the PEM private key of --tls-cert")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="HTTP processes sharing the port, all committing through this "
                             "one's writer (default 1; quota limits hold per process)")
    # A child of --workers: the inherited socket, and the pipe it reports readiness on.
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace, open_coordinator: Opener) -> int:
    if args.no_auth and not is_loopback(args.host):
        raise InvalidRequest(f"--no-auth is allowed only on a loopback address, not {args.host}")
    if not 0 <= args.port <= 65535:
        raise InvalidRequest(f"--port {args.port} is not a port number")
    if not 1 <= args.workers <= 64:
        raise InvalidRequest(f"--workers must be from 1 to 64, got {args.workers}")
    grpc_port = getattr(args, "grpc_port", None)
    if grpc_port is not None and not 0 < grpc_port <= 65535:
        raise InvalidRequest(f"--grpc-port {grpc_port} is not a port number")
    if grpc_port is not None and grpc_port == args.port:
        raise InvalidRequest(f"--grpc-port {grpc_port} is the HTTP --port too")
    tls = check_tls(args.tls_cert, args.tls_key)
    from coordinator_server.serve import serve

    return serve(open_coordinator, host=args.host, port=args.port, auth=not args.no_auth,
                 grace=args.grace, tls=tls, grpc_port=grpc_port, workers=args.workers,
                 fd=args.fd, child_args=None if args.fd is not None else _child_args(args),
                 ready_fd=args.ready_fd)


def _child_args(args: argparse.Namespace) -> list[str]:
    """The command line of the other HTTP processes of ``--workers`` (``--fd`` follows;
    gRPC is served by the first process only)."""
    out = []
    if getattr(args, "data_dir", None):
        out += ["--data-dir", str(args.data_dir)]
    if getattr(args, "config", None):
        out += ["--config", str(args.config)]
    out += ["serve", "--grace", str(args.grace)]
    if args.no_auth:
        out.append("--no-auth")
    if args.tls_cert:
        out += ["--tls-cert", args.tls_cert, "--tls-key", args.tls_key]
    return out


SERVE = CliCommand(name="serve", help="serve the Open Inference Protocol v2 and the contract API",
                   add_arguments=_serve_args, run=_serve)
