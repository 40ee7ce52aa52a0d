"""External data: tensors whose bytes live in a file beside the model.

Models are stored as bytes, so they have no directory of their own; onnxruntime would resolve
a location against the process's working directory. We therefore never let onnxruntime see an
external reference: by default any is refused at deploy, and when the operator allows external
data, locations are resolved only inside the configured directory (relative, no ``..``, no
symlink leading out) and the engine reads the bytes itself and embeds them before building the
session. Note the resource id hashes the model bytes only: whoever can write that directory
controls those weights, so it is an operator-only place.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from onnx import TensorProto

from coordinator_hookspecs import SecurityRejected


def is_external(tensor: TensorProto) -> bool:
    """True when the tensor's data is (or claims to be) outside the model bytes."""
    return tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0


def _fields(tensor: TensorProto, where: str) -> tuple[str, int, int | None]:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise SecurityRejected(
            f"tensor '{tensor.name}' at {where} has a non-numeric external data offset/length"
        ) from None
    if offset < 0 or (length is not None and length < 0):
        raise SecurityRejected(
            f"tensor '{tensor.name}' at {where} has a negative external data offset/length"
        )
    return location, offset, length


def resolve_location(location: str, base: Path, *, name: str, where: str) -> Path:
    """The file ``location`` names inside ``base``; ``SecurityRejected`` if it would leave it."""
    pure = PurePosixPath(location)
    if (
        not location
        or pure.is_absolute()
        or ".." in pure.parts
        or "\\" in location
        or ":" in location
        or "\x00" in location
    ):
        raise SecurityRejected(
            f"tensor '{name}' at {where} refers to external data '{location}', which is not a "
            "plain relative path inside the model's directory"
        )
    root = base.resolve()
    path = (root / pure).resolve()
    if not path.is_relative_to(root):
        raise SecurityRejected(
            f"tensor '{name}' at {where} refers to external data '{location}', which resolves "
            "outside the model's directory"
        )
    if not path.is_file():
        raise SecurityRejected(
            f"tensor '{name}' at {where} refers to external data '{location}', which does not "
            f"exist in {root}"
        )
    return path


def check_external(
    tensors: Iterable[tuple[str, TensorProto]], allowed: bool, base: Path | None, budget: int
) -> int:
    """Refuse external references unless ``allowed``; when allowed, check every location and
    range and return the total bytes they add (refused past ``budget``)."""
    total = 0
    for where, tensor in tensors:
        if not is_external(tensor):
            continue
        location, offset, length = _fields(tensor, where)
        if not allowed or base is None:
            raise SecurityRejected(
                f"tensor '{tensor.name}' at {where} stores its data in the external file "
                f"'{location}'; external data is disabled (onnxruntime.allow_external_data)"
            )
        path = resolve_location(location, base, name=tensor.name, where=where)
        size = os.stat(path).st_size
        span = size - offset if length is None else length
        if offset + span > size or span < 0:
            raise SecurityRejected(
                f"tensor '{tensor.name}' at {where}: external range {offset}+{span} is past "
                f"the end of '{location}' ({size} bytes)"
            )
        total += span
        if total > budget:
            raise SecurityRejected(
                f"model and its external data exceed the onnxruntime.max_model_bytes limit "
                f"({budget} bytes left for external data)"
            )
    return total


def embed_external(tensors: Iterable[tuple[str, TensorProto]], base: Path) -> None:
    """Read every external tensor's bytes (already checked) into the model itself, so the
    session is built from self-contained bytes and onnxruntime never opens a file."""
    for where, tensor in tensors:
        if not is_external(tensor):
            continue
        location, offset, length = _fields(tensor, where)
        path = resolve_location(location, base, name=tensor.name, where=where)
        with open(path, "rb") as handle:
            handle.seek(offset)
            tensor.raw_data = handle.read() if length is None else handle.read(length)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT
