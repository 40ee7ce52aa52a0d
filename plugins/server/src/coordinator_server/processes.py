"""``coordinator serve --workers N``: N HTTP processes on one port and one data directory.

The first process (the one started) binds the listening socket, opens the coordinator, and
makes it serve its writer (``Coordinator.serve_writer``); then it starts N - 1 more
``coordinator serve`` processes that inherit the socket (``--fd``) and open their
coordinators with ``[coordinator] writer = "connect"``. Every process accepts connections
on the shared socket (the kernel hands each new connection to one of them), parses HTTP and
runs the pipeline itself; every commit of every process goes through the first one's single
writer, so they never contend for SQLite's write lock, and one hash chain holds them all.

What each process keeps for itself: its quota state (limits hold per process, not across
them: for exact limits run one HTTP process, with the pipeline in worker processes through
``[coordinator] processes``), its caches and its readiness. On SIGTERM the first process
stops its children first (each finishes its in-flight requests within the grace period),
then itself: the writer closes last.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from loguru import logger

#: What a child runs: the coordinator CLI of this interpreter.
_CLI = "from coordinator_core.cli.main import main; raise SystemExit(main())"


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every HTTP process accepts on (inherited by the children)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Children:
    """The N - 1 extra HTTP processes of ``--workers N``."""

    def __init__(self, count: int, sock: socket.socket, child_args: list[str]) -> None:
        self.count = count
        self.sock = sock
        self.args = child_args
        self.procs: list[subprocess.Popen[bytes]] = []
        self._ready = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start them (once this process's coordinator serves its writer). Each reports on
        a pipe of its own when its coordinator is open (``--ready-fd``)."""
        # The others write through this process's writer, so they cannot run worker
        # processes of their own (those commit through their coordinator's writer).
        env = {**os.environ, "COORDINATOR_WRITER": "connect", "COORDINATOR_PROCESSES": "0"}
        fd = self.sock.fileno()
        for _ in range(self.count):
            read, write = os.pipe()
            self.procs.append(subprocess.Popen(
                [sys.executable, "-c", _CLI, *self.args, "--fd", str(fd), "--ready-fd",
                 str(write)], pass_fds=(fd, write), env=env))
            os.close(write)
            threading.Thread(target=self._await, args=(read,), daemon=True,
                             name="coordinator-http-process-ready").start()
        logger.info("started {} more HTTP process(es): {}", self.count,
                    ", ".join(str(p.pid) for p in self.procs))

    def stop(self, grace: float) -> None:
        """SIGTERM each child and wait for it (its in-flight requests finish first)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + grace + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("HTTP process {} did not stop in time: killed", proc.pid)
                proc.kill()
                proc.wait(5)

    def _await(self, read: int) -> None:
        try:
            if os.read(read, 1):
                with self._lock:
                    self._ready += 1
        finally:
            os.close(read)

    def ready(self) -> bool:
        """Every child has opened its coordinator (and none has exited since)."""
        return self._ready == self.count and all(p.poll() is None for p in self.procs)


def report_ready(fd: int | None) -> None:
    """In a child of ``--workers``: tell the first process this one is open."""
    if fd is not None:
        try:
            os.write(fd, b"r")
        finally:
            os.close(fd)
