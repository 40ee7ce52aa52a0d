"""The one writer, as a service: commits what other processes send, in groups.

``CommitService.handle`` takes what one read of a pipe found waiting (``finish`` and
``append`` calls, ``done`` messages of worker processes, deploys and policy changes) and
commits all of it as one group through this process's ``SqliteStore``
(``finish_many``): one transaction, sequence numbers and chain links assigned here, one
answer message back. Worker processes reach it over their pipes (``pool.py``); other
processes on the same data directory (a second front end, a CLI beside a running service)
reach it over ``<data dir>/writer.sock`` (``WriterListener``), so no process but this one
ever takes SQLite's write lock on the execution path.

The socket is a Unix socket created with mode 0600 in the data directory, and a connection
must prove it knows the key in ``<data dir>/writer.key`` (0600, made here): whoever can read
the data directory can write to it anyway; nobody else can.
"""

from __future__ import annotations

import os
import secrets
import threading
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

import attrs

from coordinator_core.execution.commit import commit_error, record_failure
from coordinator_core.log import logger
from coordinator_core.workers.channel import REPLY, Channel, serve_batches
from coordinator_core.workers.remote_store import (
    APPEND,
    FINISH,
    PUT_RESOURCE,
    SET_POLICY,
    rows_of,
)
from coordinator_core.workers.worker import DONE
from coordinator_hookspecs import (
    ExecutionResult,
    InvalidRequest,
    Status,
)

#: The calls other than ``finish`` the writer answers.
_CALLS = frozenset({APPEND, PUT_RESOURCE, SET_POLICY})
SOCKET = "writer.sock"
KEY = "writer.key"


class CommitService:
    """Commits other processes' writes through ``store`` (with ``processors``) and hands
    what was committed to the audit sinks."""

    def __init__(self, store: Any, processors: Any, audit: Any, audit_on: bool) -> None:
        self._store = store
        self._processors = processors
        self._emit = audit.emit_all
        self._audit_on = audit_on

    def handle(self, channel: Channel, messages: list[tuple[Any, ...]],
               results: list[tuple[Any, ...]] | None = None) -> None:
        """Commit what ``messages`` hold, answer the calls among them in one message, and
        append to ``results`` the ``(result, resource_type, stages)`` of ``done`` messages
        (their result changed to failed if their record could not be committed)."""
        store, audit_on = self._store, self._audit_on
        commits: list[tuple[Any, ...]] = []  # (record, effects, children)
        answers: list[Any] = []  # per commit: the call id to answer, or the DONE message
        replies: list[tuple[int, bool, Any]] = []
        committed: list[Any] = []
        for message in messages:
            tag = message[0]
            if tag == DONE:
                commits.append((message[1], (), message[2]))
                answers.append(message)
            elif tag == FINISH:
                commits.append(message[2:])
                answers.append(message[1])
            elif tag == REPLY:
                channel.deliver(message)
            elif tag in _CALLS:
                replies.append(self._call(message, committed))
            # anything else (a worker's result) is for the caller of handle
        if commits:
            try:
                outcomes = store.finish_many(commits, self._processors)
            except Exception as exc:  # the store is closed: every commit fails alike
                outcomes = [(exc, {}) for _ in commits]
            for answer, item, (finished, written) in zip(answers, commits, outcomes,
                                                          strict=True):
                if type(answer) is int:  # the sender waits for this commit
                    if isinstance(finished, BaseException):
                        replies.append((answer, False, finished))
                        continue
                    replies.append((answer, True,
                                    (rows_of(finished.records), finished.error, written)))
                elif isinstance(finished, BaseException):
                    committed.extend(self._failed_commit(item[0], item[2], finished))
                    if answer[3] is not None and results is not None:
                        results.append((failed(answer[3], finished), answer[4], answer[5]))
                    continue
                elif answer[3] is not None and results is not None:
                    results.append(answer[3:])
                if audit_on:
                    committed.extend(finished.records)
        if replies:
            channel.reply_all(replies)
        if committed and audit_on:
            self._emit(committed)

    def _call(self, message: tuple[Any, ...], committed: list[Any]) -> tuple[int, bool, Any]:
        tag, call_id = message[0], message[1]
        store = self._store
        try:
            if tag == APPEND:
                appended = tuple(store.append(record) for record in message[2])
                committed.extend(appended)
                return call_id, True, ("records", appended)
            if tag == PUT_RESOURCE:
                return call_id, True, store.put_resource(message[2], message[3])
            return call_id, True, store.set_policy(message[2], message[3])
        except Exception as exc:
            return call_id, False, exc

    def _failed_commit(self, record: Any, children: Any, exc: BaseException) -> Any:
        """A ``done`` record could not be committed: written as failed, as the in-process
        pipeline's commit does (``execution/commit.py``)."""
        logger.opt(exception=exc).error("commit of {} failed", record.execution_id)
        return record_failure(self._store, record, commit_error(exc), children)


def failed(result: ExecutionResult, exc: BaseException) -> ExecutionResult:
    """``result`` of an execution whose record could not be committed."""
    return attrs.evolve(result, status=Status.FAILED, output=None, effects=(),
                        error=commit_error(exc))


class WriterListener:
    """Serves ``CommitService`` on ``<data dir>/writer.sock`` to other processes."""

    def __init__(self, data_dir: Path, service: CommitService) -> None:
        self._path = data_dir / SOCKET
        if self._path.exists():
            if _answers(self._path, writer_key(data_dir)):
                raise InvalidRequest(f"another coordinator already serves the writer of "
                                     f"{data_dir} ([coordinator] writer = \"serve\")")
            self._path.unlink()  # left by a process that died
        self._service = service
        old = os.umask(0o177)  # the socket file is created 0600
        try:
            self._listener = Listener(str(self._path), "AF_UNIX",
                                      authkey=writer_key(data_dir))
        finally:
            os.umask(old)
        self._closed = False
        self._channels: list[Channel] = []
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name="coordinator-writer-listener")
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except Exception as exc:  # a bad key, a peer gone before the handshake
                if self._closed:
                    return
                logger.warning("writer socket: refused a connection: {}", exc)
                continue
            channel = Channel(conn, "a process using the writer socket")
            self._channels.append(channel)
            threading.Thread(target=serve_batches, args=(channel, self._service.handle),
                             daemon=True, name="coordinator-writer-client").start()

    def close(self) -> None:
        self._closed = True
        try:
            Client(str(self._path), "AF_UNIX", authkey=b"-").close()  # wake accept()
        except Exception:
            pass
        self._listener.close()
        for channel in self._channels:
            channel.close()
        self._path.unlink(missing_ok=True)


def writer_key(data_dir: Path) -> bytes:
    """The data directory's writer key (made on first use, readable by its owner only)."""
    path = data_dir / KEY
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    # Written whole to a file of our own, then linked into place: a process racing us
    # either links first (we read its key) or finds ours complete, never a half-written one.
    key = secrets.token_bytes(32)
    draft = path.with_name(f"{KEY}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(draft, path)
    except FileExistsError:
        key = path.read_bytes()
    finally:
        draft.unlink()
    return key


def connect(data_dir: Path) -> Channel:
    """A channel to the writer serving ``data_dir``; ``InvalidRequest`` naming why not."""
    path = data_dir / SOCKET
    try:
        conn = Client(str(path), "AF_UNIX", authkey=writer_key(data_dir))
    except (OSError, EOFError) as exc:
        raise InvalidRequest(f"no coordinator serves the writer of {data_dir} ({exc}); open "
                             "one with [coordinator] writer = \"serve\" first") from None
    return Channel(conn, f"the writer of {data_dir}")


def _answers(path: Path, key: bytes) -> bool:
    try:
        Client(str(path), "AF_UNIX", authkey=key).close()
        return True
    except Exception:
        return False

