"""Generate the Python modules of the Open Inference Protocol's gRPC service from
``plugins/server/src/coordinator_server/grpc/inference.proto``: ``inference_pb2.py`` (the
messages), ``inference_pb2.pyi`` (their types) and ``inference_pb2_grpc.py`` (the service).

The generated modules are checked in, so installing coordinator-server needs no protobuf
compiler; they must not drift from the .proto, so they are never edited by hand: change the
.proto, then run ``python scripts/gen_grpc.py``. ``--check`` (run by ``make lint``) exits 1
when a checked-in module differs from what would be generated. The compiler is the
``grpcio-tools`` of the locked dev dependencies, so the output is the same on every machine.
The .proto is compiled relative to the source root so the service module imports the message
module by its package path (``from coordinator_server.grpc import inference_pb2``).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOT = ROOT / "plugins" / "server" / "src"
PROTO = Path("coordinator_server") / "grpc" / "inference.proto"
OUTPUTS = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def generate() -> dict[str, str]:
    """The text of each generated module, by file name."""
    from grpc_tools import protoc  # a dev dependency: only this script needs it

    with tempfile.TemporaryDirectory() as out:
        code = protoc.main(["grpc_tools.protoc", f"-I{SOURCE_ROOT}", f"--python_out={out}",
                            f"--pyi_out={out}", f"--grpc_python_out={out}", str(PROTO)])
        if code != 0:
            raise SystemExit(f"protoc failed on {PROTO} (exit {code})")
        folder = Path(out) / PROTO.parent
        return {name: (folder / name).read_text(encoding="utf-8") for name in OUTPUTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a checked-in module differs from the generated text")
    args = parser.parse_args(argv)
    target = SOURCE_ROOT / PROTO.parent
    stale = []
    for name, text in generate().items():
        path = target / name
        if not args.check:
            path.write_text(text, encoding="utf-8")
            continue
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            shown = str(path.relative_to(ROOT))
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), shown,
                                        "generated", lineterm="", n=1)
            print("\n".join(list(diff)[:40]), file=sys.stderr)
            stale.append(shown)
    if stale:
        print(f"{', '.join(stale)} stale: run `python scripts/gen_grpc.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
