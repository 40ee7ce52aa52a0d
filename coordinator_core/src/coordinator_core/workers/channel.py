"""One duplex pipe between the coordinator and a worker process, shared by many threads.

Messages are tuples whose first item is a tag, pickled here with the highest protocol and
a dispatch table that writes the contract's records (requests, results, audit records) as
their field tuples: ``Connection.send`` builds a ``ForkingPickler`` per message, and attrs'
default pickling builds a dict per object, both a measurable share of a short execution's
cost. Any thread may ``send``; a send lock
keeps two messages from interleaving. ``call`` sends a request carrying a fresh call id and
blocks until the peer's ``reply`` to that id arrives: the pipe's one reader thread (the
owner's ``serve`` loop) hands replies to their waiters with ``deliver``, so many calls are in
flight at once and a slow one never holds up the others. A waiter is a plain lock the caller
sleeps on (the cheapest wake-up CPython has), not a ``Future``.
"""

from __future__ import annotations

import io
import itertools
import operator
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pickle import HIGHEST_PROTOCOL, Pickler, loads
from typing import Any

import attrs

from coordinator_core.log import logger
from coordinator_hookspecs import (
    AccessPolicy,
    AuditRecord,
    Effect,
    ErrorInfo,
    ErrorKind,
    ExecutionRequest,
    ExecutionResult,
    InternalError,
    ResourceInfo,
    portable_error,
)


def _by_fields(cls: type) -> Any:
    """Pickle ``cls`` (an attrs class without validators) as ``cls(*fields)``."""
    fields = operator.attrgetter(*(a.name for a in attrs.fields(cls)))
    return lambda obj: (cls, fields(obj))


_TABLE: dict[type, Any] = {
    cls: _by_fields(cls) for cls in (ExecutionRequest, ExecutionResult, AuditRecord, ErrorInfo,
                                     Effect, ResourceInfo, AccessPolicy)}


def dumps(message: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = Pickler(buffer, HIGHEST_PROTOCOL)
    pickler.dispatch_table = _TABLE
    pickler.dump(message)
    return buffer.getvalue()

#: The tag of a reply: ``("reply", call_id, ok, value)``; of several replies in one message
#: (``("replies", [(call_id, ok, value), ...])``), as the coordinator's writer answers a group.
REPLY = "reply"
REPLIES = "replies"


class ChannelClosed(InternalError):
    """The peer process went away while a call waited for its reply."""


class Channel:
    """Send from any thread; ``call`` and wait for the reply the reader delivers."""

    def __init__(self, conn: Connection, peer: str) -> None:
        self.conn = conn
        self.peer = peer
        send_bytes = conn.send_bytes
        self._send = lambda message: send_bytes(dumps(message))
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}
        self.closed = False

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._send(message)

    def recv(self) -> Any:
        """One message (only the pipe's reader thread calls this)."""
        return loads(self.conn.recv_bytes())

    def call(self, tag: str, *args: Any) -> Any:
        """Send ``(tag, call_id, *args)``; return the peer's answer or raise its error."""
        call_id = next(self._ids)
        waiter = threading.Lock()
        waiter.acquire()
        slot: list[Any] = [waiter, False, None]
        self._waiting[call_id] = slot
        if self.closed:
            self._waiting.pop(call_id, None)
            raise ChannelClosed(f"{self.peer} is gone")
        try:
            self.send((tag, call_id, *args))
        except OSError as exc:  # the peer is gone: the same as a pipe already closed
            self._waiting.pop(call_id, None)
            raise ChannelClosed(f"{self.peer} is gone ({exc})") from None
        except BaseException:
            self._waiting.pop(call_id, None)
            raise
        waiter.acquire()
        if slot[1]:
            return slot[2]
        error: BaseException = slot[2]
        raise error

    def reply(self, call_id: int, value: Any = None, error: BaseException | None = None) -> None:
        """Answer the peer's call ``call_id`` (from the thread that did the work)."""
        if error is None:
            self.send((REPLY, call_id, True, value))
        else:
            self.send((REPLY, call_id, False, portable(error)))

    def deliver(self, message: tuple[Any, ...]) -> None:
        """The reader got ``("reply", call_id, ok, value)``: wake the caller waiting on it."""
        call_id = message[1]
        slot = self._waiting.pop(call_id, None) if type(call_id) is int else None
        if slot is not None:
            slot[1], slot[2] = message[2], message[3]
            slot[0].release()

    def reply_all(self, replies: list[tuple[int, bool, Any]]) -> None:
        """Answer several calls in one message: ``(call_id, ok, value or error)`` each."""
        self.send((REPLIES, [(call_id, ok, value if ok else portable(value))
                             for call_id, ok, value in replies]))

    def fail_all(self, why: str) -> None:
        """The pipe closed: every call still waiting raises ``ChannelClosed``."""
        self.closed = True
        while self._waiting:
            _, slot = self._waiting.popitem()
            slot[1], slot[2] = False, ChannelClosed(why)
            slot[0].release()

    def close(self) -> None:
        self.closed = True
        try:
            self.conn.close()
        except OSError:
            pass


#: An exception safe to pickle across the pipe (the contract's ``portable_error``).
portable = portable_error


def serve(channel: Channel, handle: Callable[[tuple[Any, ...]], bool]) -> str:
    """The reader loop of ``channel``: replies go to their waiters, every other message to
    ``handle`` (which returns False to stop). Returns why it ended."""
    recv = channel.recv
    deliver = channel.deliver
    while True:
        try:
            message = recv()
        except (EOFError, OSError) as exc:
            why = f"{channel.peer} closed its pipe ({type(exc).__name__})"
            break
        except Exception as exc:  # a message that cannot be read: the pipe is unusable
            logger.opt(exception=exc).error("{}: unreadable message", channel.peer)
            why = f"an unreadable message from {channel.peer} ({type(exc).__name__})"
            break
        tag = message[0]
        if tag == REPLY:
            deliver(message)
        elif tag == REPLIES:
            for call_id, ok, value in message[1]:
                deliver((REPLY, call_id, ok, value))
        else:
            try:
                if not handle(message):
                    why = "stopped"
                    break
            except Exception as exc:  # a bug handling one message must not end the pipe
                logger.opt(exception=exc).error("{}: a {!r} message failed", channel.peer, tag)
    channel.fail_all(f"{channel.peer}: {why}")
    return why


def serve_batches(channel: Channel,
                  handle: Callable[[Channel, list[tuple[Any, ...]]], None],
                  most: int = 256) -> str:
    """The reader loop of a writer's side of ``channel``: everything one read finds waiting
    (up to ``most`` messages) goes to ``handle`` together, so it can be committed as one
    group and answered in one message. Returns why it ended."""
    recv, poll = channel.recv, channel.conn.poll
    try:
        while True:
            messages = [recv()]
            while len(messages) < most and poll():
                messages.append(recv())
            try:
                handle(channel, messages)
            except Exception as exc:  # logged; the pipe and the other senders go on
                logger.opt(exception=exc).error("{}: handling {} message(s) failed",
                                                channel.peer, len(messages))
    except (EOFError, OSError) as exc:
        why = f"{channel.peer} closed its pipe ({type(exc).__name__})"
    except Exception as exc:  # a message that cannot be read: the pipe is unusable
        logger.opt(exception=exc).error("{}: unreadable message", channel.peer)
        why = f"an unreadable message from {channel.peer} ({type(exc).__name__})"
    channel.fail_all(why)
    return why


__all__ = ["REPLIES", "REPLY", "Channel", "ChannelClosed", "ErrorKind", "portable", "serve",
           "serve_batches"]
