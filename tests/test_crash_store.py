"""Crash test (issue 5 acceptance): a child process commits state-writing executions in a
loop and is killed with SIGKILL at random moments, 30+ times. After every kill the database
passes ``PRAGMA integrity_check``, the audit chain verifies, every execution the audit log
calls succeeded has all of its writes, and no other execution has any.

Most children are forked by multiprocessing's fork server (single-threaded, so a child never
inherits a lock held by a test-process thread; a few ms to start, so 30 kills take seconds);
one is a fresh interpreter running this file as a script, so the test also covers a process
that shares nothing with the parent.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordinator_core.store import BoundProcessor, SqliteStore
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import AuditRecord, Effect, InvalidRequest, ResourceInfo
from tests.helpers import FdReady, start_killable_child

KILLS = 32
WRITES = 3  # state keys per execution


class Veto:
    """A plugin processor that refuses every ``veto`` effect (its execution must roll back)."""

    def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None:
        raise InvalidRequest("vetoed on purpose")

    def commit(self, execution_id: str) -> None: ...

    def rollback(self, execution_id: str) -> None: ...


PROCESSORS = (BoundProcessor("state", StateProcessor(), KINDS),
              BoundProcessor("veto", Veto(), frozenset({"veto"})))


def child_main(data_dir: str, round_no: int, durability: str, ready: Any) -> None:
    """Run executions on three threads until killed (or 10 s, as a safety net)."""
    store = SqliteStore(data_dir, durability=durability)
    rng = random.Random(round_no)
    rid = hashlib.sha256(b"crash-test").hexdigest()

    def worker(t: int) -> None:
        for i in range(1_000_000):
            eid = f"r{round_no}-t{t}-{i}"
            roll = rng.random()
            status = "failed" if roll < 0.15 else "succeeded"
            effects = [Effect("state.set", rid, f"k/{eid}/{j}".encode(), eid.encode())
                       for j in range(WRITES)]
            effects.append(Effect("event", rid, value=eid.encode()))
            if 0.15 <= roll < 0.25:
                effects.append(Effect("veto", rid))
            if roll > 0.97:
                code = f"module {eid}".encode()
                store.put_resource(ResourceInfo(id=hashlib.sha256(code).hexdigest(),
                                                type="wasm", name=eid), code)
            store.finish(AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                                     execution_id=eid, caller=f"t{t}", resource_id=rid,
                                     status=status), effects, PROCESSORS)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(3)]
    for thread in threads:
        thread.start()
    ready.set()
    time.sleep(10)


class Seen:
    """What earlier rounds read from the audit log (it only grows, so each round reads on
    from ``last``; verify() still walks all of it)."""

    def __init__(self) -> None:
        self.last = 0
        self.finals: dict[str, str] = {}
        self.rolled_back: set[str] = set()


def check(data_dir: Path, seen: Seen) -> tuple[int, int]:
    """Every invariant after a crash; returns (succeeded, other) execution counts."""
    store = SqliteStore(data_dir)
    finals, rolled_back = seen.finals, seen.rolled_back
    try:
        assert store.integrity_check() == "ok"
        report = store.verify()
        assert report.ok, report
        for record in store.audit_records(seen.last + 1):
            seen.last = record.seq
            if record.record_kind == "execution":
                assert record.execution_id not in finals
                finals[record.execution_id or ""] = record.status or ""
            elif record.record_kind == "rollback":
                rolled_back.add(record.execution_id or "")
        assert rolled_back <= {e for e, s in finals.items() if s == "failed"}
        rid = hashlib.sha256(b"crash-test").hexdigest()
        written: dict[str, int] = {}
        for key, value in store.state_items(rid):
            eid = key.decode().split("/")[1]
            assert value == eid.encode()
            written[eid] = written.get(eid, 0) + 1
        succeeded = {e for e, s in finals.items() if s == "succeeded"}
        assert set(written) == succeeded, "state disagrees with the audit log"
        assert all(n == WRITES for n in written.values()), "an execution was half written"
        events = [e["payload"].decode() for e in store.events(rid, limit=10**9)]
        assert sorted(events) == sorted(succeeded)
        for info in store.list_resources():
            assert hashlib.sha256(store.load_code(info.id)).hexdigest() == info.id
        return len(succeeded), len(finals) - len(succeeded)
    finally:
        store.close()


def _spawn_child(data_dir: Path, round_no: int, durability: str) -> tuple[Any, int]:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([sys.executable, __file__, str(data_dir), str(round_no), durability,
                             str(write_fd)], pass_fds=(write_fd,))
    os.close(write_fd)
    return proc, read_fd


def test_sigkill_never_breaks_state_or_audit(tmp_path: Path) -> None:
    rng = random.Random(5)
    totals = [0, 0]
    seen = Seen()
    for round_no in range(KILLS):
        durability = "full" if round_no % 4 == 3 else "normal"
        fresh = round_no == KILLS // 2
        if fresh:
            proc, read_fd = _spawn_child(tmp_path, round_no, durability)
        else:
            child, ready = start_killable_child(child_main, str(tmp_path), round_no, durability)
        # Mostly kill while executions run; sometimes while the store is still opening.
        if rng.random() < 0.85:
            if fresh:
                select.select([read_fd], [], [], 10)
            else:
                ready.wait(10)
        time.sleep(rng.uniform(0.0, 0.03))
        if fresh:
            proc.kill()
            proc.wait()
            os.close(read_fd)
        else:
            child.kill()
            child.join(10)
            assert child.exitcode == -signal.SIGKILL
        succeeded, other = check(tmp_path, seen)
        totals = [succeeded, other]
    assert totals[0] > 0 and totals[1] > 0  # the children really committed work


if __name__ == "__main__":
    child_main(sys.argv[1], int(sys.argv[2]), sys.argv[3], FdReady(int(sys.argv[4])))
