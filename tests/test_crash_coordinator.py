"""Crash test through the whole pipeline: a child process runs a WASM contract through
``Coordinator`` (real wasmtime engine, state processor, SQLite store) on three threads and is
killed with SIGKILL at random moments. After each kill: integrity check, chain verified, and
every execution the audit log calls succeeded has its state write and event, while failed
ones (a trap after the write, fuel exhausted after the write) have none.

The contract writes ``caller -> caller`` and emits ``caller`` as an event; every execution has
its own caller, which the audit record carries, so the log alone says what must be present.
The store-level crash test (``test_crash_store.py``) does the 30+ kills; this one adds the
engine and the pipeline with fewer.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import coordinator_engine_wasmtime.plugin as wasmtime_plugin
from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.store import SqliteStore
from tests.helpers import start_killable_child

KILLS = 15

CONTRACT = """
(module
  (import "env" "caller_len" (func $caller_len (result i32)))
  (import "env" "caller_read" (func $caller_read (param i32)))
  (import "env" "storage_set" (func $set (param i32 i32 i32 i32)))
  (import "env" "emit_event" (func $event (param i32 i32)))
  (memory (export "memory") 1)
  (func $record
    (local $n i32)
    (local.set $n (call $caller_len))
    (call $caller_read (i32.const 0))
    (call $set (i32.const 0) (local.get $n) (i32.const 0) (local.get $n))
    (call $event (i32.const 0) (local.get $n)))
  (func (export "ok") (call $record))
  (func (export "trap") (call $record) unreachable)
  (func (export "burn") (call $record) (loop $forever (br $forever))))
"""


def child_main(data_dir: Path, round_no: int, processes: int, ready: Any) -> None:
    # Only the wasmtime plugin, preloaded by the fork server: children start in milliseconds.
    coord = Coordinator.open(data_dir=data_dir, plugins=[wasmtime_plugin], entry_points=False,
                             overrides={"coordinator": {"processes": processes}})
    rid = coord.deploy(CONTRACT, "wasm", capabilities=["storage", "events"],
                       source_format="wat")
    if processes:
        pids = [str(p["pid"]) for p in coord.metrics()["workers"]["processes"]]
        (data_dir / "worker.pids").write_text(" ".join(pids))
    acknowledged = os.open(data_dir / "acknowledged", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    rng = random.Random(round_no)

    def worker(t: int) -> None:
        for i in range(1_000_000):
            roll = rng.random()
            entry = "trap" if roll < 0.1 else "burn" if roll < 0.2 else "ok"
            result = coord.execute(ExecutionRequest(
                resource_id=rid, caller=f"r{round_no}-t{t}-{i}", entry=entry,
                fee_limit=200_000, timeout=2.0))
            # One small O_APPEND write is atomic: the line is whole or absent.
            os.write(acknowledged, f"{result.caller} {result.status.value}\n".encode())

    for t in range(3):
        threading.Thread(target=worker, args=(t,), daemon=True).start()
    ready.set()
    time.sleep(10)


def check(data_dir: Path) -> tuple[int, int]:
    store = SqliteStore(data_dir)
    try:
        assert store.integrity_check() == "ok"
        report = store.verify()
        assert report.ok, report
        resources = store.list_resources()
        if not resources:  # killed before the first deploy committed
            return 0, 0
        rid = resources[0].id
        finals = {r.caller or "": r.status for r in store.audit_records()
                  if r.record_kind == "execution"}
        succeeded = {c for c, s in finals.items() if s == "succeeded"}
        state = dict(store.state_items(rid))
        assert {k.decode() for k in state} == succeeded, "state disagrees with the audit log"
        assert all(k == v for k, v in state.items())
        events = sorted(e["payload"].decode() for e in store.events(rid, limit=10**9))
        assert events == sorted(succeeded)
        # Nothing a caller was told is lost: every result returned has its final record.
        told = (data_dir / "acknowledged").read_text().splitlines()
        for line in told:
            caller, status = line.split()
            assert finals.get(caller) == status, f"acknowledged {line!r} but the log has " \
                f"{finals.get(caller)!r}"
        return len(succeeded), len(finals) - len(succeeded)
    finally:
        store.close()


@pytest.mark.parametrize(("processes", "kills"), [(0, KILLS), (2, 4)])
def test_sigkill_through_the_coordinator(tmp_path: Path, processes: int, kills: int) -> None:
    """In-process, and with the pipeline in two worker processes (then the coordinator,
    owner of the one writer, is the process killed; its workers must end with it)."""
    rng = random.Random(7)
    totals = (0, 0)
    for round_no in range(kills):
        child, ready = start_killable_child(child_main, tmp_path, round_no, processes,
                                            daemon=not processes)
        ready.wait(60)
        time.sleep(rng.uniform(0.01, 0.08) if not processes else rng.uniform(0.2, 0.6))
        child.kill()
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        if processes:
            for pid in (tmp_path / "worker.pids").read_text().split():
                _wait_gone(int(pid))
        totals = check(tmp_path)
    assert totals[0] > 0 and totals[1] > 0


def _wait_gone(pid: int, timeout: float = 20.0) -> None:
    """A worker whose coordinator was killed sees its pipe close and exits."""
    end = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # A zombie is gone for our purpose (its parent, the killed child, cannot reap it).
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except FileNotFoundError:
            return
        assert time.monotonic() < end, f"worker process {pid} outlived its coordinator"
        time.sleep(0.05)
