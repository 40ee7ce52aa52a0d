"""Serialised compiled modules on disk, under ``<data_dir>/wasmtime-cache``.

Deserialising a wasmtime artifact maps native code into the process, so a file someone else
placed or altered there would be code execution. Every artifact is therefore sealed with an
HMAC-SHA256 under a per-directory secret (``secret``, 32 random bytes, mode 0600, created on
first use) over its name and bytes; a file whose seal does not verify is ignored and
replaced. The file name is derived from the module hash, the wasmtime version and the engine
configuration fingerprint, so a config change never loads a stale artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from loguru import logger

HEADER = b"CWTA1"  # coordinator wasmtime artifact, format 1
MAC_SIZE = 32


class ArtifactStore:
    """Sealed artifacts in one directory; disabled (all misses) if it cannot be used."""

    def __init__(self, directory: Path, fingerprint: str, max_bytes: int) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self.max_bytes = max_bytes
        self._secret: bytes | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
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
            if len(secret) != 32:
                raise OSError(f"{path} is not a 32-byte secret") from None
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

    def _seal(self, name: str, artifact: bytes) -> bytes:
        assert self._secret is not None
        return hmac.new(self._secret, name.encode() + b"\0" + artifact, hashlib.sha256).digest()

    def load(self, module_hash: str) -> bytes | None:
        """The verified artifact of ``module_hash``, or None (absent, foreign or damaged)."""
        if self._secret is None:
            return None
        name = self._name(module_hash)
        try:
            data = (self.directory / (name + ".cwasm")).read_bytes()
        except OSError:
            return None
        head = len(HEADER)
        artifact = data[head + MAC_SIZE:]
        if data[:head] != HEADER or not hmac.compare_digest(
                data[head:head + MAC_SIZE], self._seal(name, artifact)):
            logger.warning("ignoring wasmtime artifact {} whose seal does not verify", name)
            return None
        return artifact

    def save(self, module_hash: str, artifact: bytes) -> None:
        """Write atomically (temp file + rename), then keep the directory within budget."""
        if self._secret is None:
            return
        name = self._name(module_hash)
        final = self.directory / (name + ".cwasm")
        temp = self.directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            with open(temp, "wb") as handle:
                handle.write(HEADER + self._seal(name, artifact) + artifact)
            os.replace(temp, final)
        except OSError as exc:
            logger.warning("could not write wasmtime artifact {}: {}", final, exc)
            with contextlib.suppress(OSError):
                temp.unlink()
            return
        self._prune()

    def _prune(self) -> None:
        entries = []
        for path in self.directory.glob("*.cwasm"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
