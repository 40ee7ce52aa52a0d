"""Serialised compiled modules on disk, under ``<data_dir>/wasmtime-cache``.

Deserialising a wasmtime artifact maps native code into the process, so a file someone else
placed or altered there would be code execution. Three rules keep to "only artifacts we
wrote":

- every artifact (``<name>.cwasm``, wasmtime's bytes as they are, so it can be mapped) is
  sealed by a sidecar (``<name>.seal``): an HMAC-SHA256 under a per-directory secret
  (``secret``, 32 random bytes, mode 0600, created on first use) over its name and bytes;
  an artifact whose seal is missing or does not verify is ignored (and replaced by the
  next compile);
- the directory and the file must belong to this user and be writable by nobody else, so
  nobody but this user can change the file between the check and the load;
- the file is verified through an open descriptor and wasmtime loads that same descriptor
  (``/proc/self/fd/N``): a rename or replacement after the check changes nothing. Mapping
  the file is also several times faster than deserialising a copy from memory.

The file name is derived from the module hash, the wasmtime version and the engine
configuration fingerprint, so a config change never loads a stale artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from loguru import logger

from coordinator_engine_wasmtime import _capi

HEADER = b"CWTA1"  # coordinator wasmtime artifact, format 1
_PROC_FD = Path("/proc/self/fd")


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class ArtifactStore:
    """Sealed artifacts in one directory; disabled (all misses) if it cannot be trusted."""

    def __init__(self, directory: Path, fingerprint: str, max_bytes: int) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self.max_bytes = max_bytes
        self._secret: bytes | None = None
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _private(directory.stat()):
                raise OSError("it is not private to this user (owner or group/other write)")
            self._secret = self._load_secret(directory / "secret")
        except OSError as exc:
            logger.warning("wasmtime artifact cache disabled: {} is unusable ({})",
                           directory, exc)

    @staticmethod
    def _load_secret(path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            secret = path.read_bytes()
            if len(secret) != 32 or not _private(path.stat()):
                raise OSError(f"{path} is not a private 32-byte secret") from None
            return secret
        secret = secrets.token_bytes(32)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
        return secret

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def _name(self, module_hash: str) -> str:
        return hashlib.sha256(f"{module_hash}|{self.fingerprint}".encode()).hexdigest()

    def _seal(self, name: str, artifact: bytes | memoryview) -> bytes:
        assert self._secret is not None
        mac = hmac.new(self._secret, name.encode() + b"\0", hashlib.sha256)
        mac.update(artifact)  # a memoryview is hashed without a copy
        return mac.digest()

    def _open(self, path: Path) -> int | None:
        """A descriptor of ``path`` if it is a regular file private to this user."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and _private(st):
            return fd
        os.close(fd)
        logger.warning("ignoring {}: not a regular file private to this user", path)
        return None

    def deserialize(self, engine: int, module_hash: str) -> int | None:
        """The module of ``module_hash`` from its verified artifact, or None (absent,
        foreign, damaged, not private, or refused by wasmtime)."""
        if self._secret is None:
            return None
        name = self._name(module_hash)
        try:
            seal = (self.directory / (name + ".seal")).read_bytes()
        except OSError:
            return None
        fd = self._open(self.directory / (name + ".cwasm"))
        if fd is None:
            return None
        try:
            with open(fd, "rb", closefd=False) as handle:
                artifact = memoryview(handle.read())
            if seal[:len(HEADER)] != HEADER or not hmac.compare_digest(
                    seal[len(HEADER):], self._seal(name, artifact)):
                logger.warning("ignoring wasmtime artifact {} whose seal does not verify", name)
                return None
            try:
                if _PROC_FD.is_dir():  # wasmtime maps the very file that was verified
                    return _capi.deserialize_file(engine, f"{_PROC_FD}/{fd}")
                return _capi.deserialize(engine, bytes(artifact))
            except _capi.WasmError as exc:  # e.g. written by another wasmtime build
                logger.info("recompiling: wasmtime refused artifact {} ({})", name, exc)
                return None
        finally:
            os.close(fd)

    def save(self, module_hash: str, artifact: bytes) -> None:
        """Write the artifact, then its seal, each atomically (temp file + rename); a reader
        between the two sees a seal that does not match and recompiles."""
        if self._secret is None:
            return
        name = self._name(module_hash)
        try:
            self._write(name + ".cwasm", artifact)
            self._write(name + ".seal", HEADER + self._seal(name, artifact))
        except OSError as exc:
            logger.warning("could not write wasmtime artifact {}: {}", name, exc)
            return
        self._prune()

    def _write(self, filename: str, data: bytes) -> None:
        temp = self.directory / f".{filename}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, self.directory / filename)
        except OSError:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    def _prune(self) -> None:
        entries = []
        for path in self.directory.glob("*.cwasm"):
            with contextlib.suppress(OSError):
                st = path.stat()
                entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                path.with_suffix(".seal").unlink()
                total -= size
