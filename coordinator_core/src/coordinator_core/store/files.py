"""Content-addressed resource files: ``resources/<aa>/<sha256>`` under the data directory.

A file is written to a temporary name and renamed into place, so a reader (or a crash) never
sees half a file; with ``fsync`` the bytes and the directory entry reach the disk before the
database row that points at them is committed. Reads re-hash the bytes: a file edited on disk
is reported as corrupt instead of being executed.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from coordinator_hookspecs import InternalError, InvalidRequest, NotFound, ResourceInfo

_RESOURCE_ID = re.compile(r"^[0-9a-f]{64}$")


def check_id(resource_id: str) -> str:
    """Refuse anything but a lowercase sha256 hex id (it becomes a path component)."""
    if not isinstance(resource_id, str) or not _RESOURCE_ID.match(resource_id):
        raise InvalidRequest(f"resource id {resource_id!r} is not a sha256 hex digest "
                             "(64 lowercase hex characters)")
    return resource_id


def check_new_resource(info: ResourceInfo, code: bytes) -> None:
    """Refuse a resource whose id is malformed or not the sha256 of its bytes, or that has
    no type (both stores, before anything is written)."""
    check_id(info.id)
    if hashlib.sha256(code).hexdigest() != info.id:
        raise InvalidRequest(f"resource id {info.id} is not the sha256 of the given bytes")
    if not info.type:
        raise InvalidRequest("a resource needs a type")


class BlobFiles:
    """The ``resources/`` directory of one data directory."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)

    def path(self, resource_id: str) -> Path:
        return self.root / resource_id[:2] / resource_id

    def write(self, resource_id: str, code: bytes) -> None:
        """Store ``code`` under its id unless an intact copy is already there."""
        target = self.path(resource_id)
        if target.exists() and self._intact(target, resource_id):
            return
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{resource_id}.{os.getpid()}.{id(code):x}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(code)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        if self.fsync:
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self, resource_id: str) -> bytes:
        target = self.path(check_id(resource_id))
        try:
            code = target.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"the bytes of resource {resource_id} are missing from "
                           f"{target.parent}") from None
        if hashlib.sha256(code).hexdigest() != resource_id:
            raise InternalError(f"resource file {target} is corrupt: its sha256 does not match "
                                "its id")
        return code

    @staticmethod
    def _intact(target: Path, resource_id: str) -> bool:
        return hashlib.sha256(target.read_bytes()).hexdigest() == resource_id
