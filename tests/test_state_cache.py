"""The committed-state cache (``store/statecache.py``): executions of a stateful resource read
the values its last execution committed from memory, and never a stale one: not after
another process wrote (the CLI beside a running coordinator), not after a vetoed commit, not
after an effect processor wrote another resource's state, not when a read overlaps another
writer's open transaction. Also the state locks it sits beside (``locks.py``)."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.execution import locks
from coordinator_core.store import statecache
from coordinator_core.store.statecache import Stamps, StateCache
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import (
    Effect,
    EffectProcessorRecord,
    EngineRecord,
    EngineResult,
    ExecutionContext,
    InvalidRequest,
    hookimpl,
)
from tests.helpers import COUNTER_WAT, run_cli


def count(coord: Coordinator, rid: str) -> int:
    result = coord.execute(ExecutionRequest(resource_id=rid))
    assert result.ok, result.error
    return int(struct.unpack("<q", result.output)[0])


def cache_reads(coord: Coordinator) -> list[tuple[str, bytes]]:
    """Record the reads that miss the cache and go to SQLite."""
    cache = coord.store._state_cache  # type: ignore[attr-defined]
    misses: list[tuple[str, bytes]] = []
    read = cache._read

    def counting(resource_id: str, key: bytes) -> bytes | None:
        misses.append((resource_id, key))
        return read(resource_id, key)

    cache._read = counting
    cache._readers.clear()  # the per-resource readers hold the read they were made with
    return misses


def test_the_next_execution_reads_what_the_last_one_committed_from_memory(
        tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path) as coord:
        rid = coord.deploy(COUNTER_WAT, "wasm", capabilities=["storage"], source_format="wat")
        misses = cache_reads(coord)
        assert [count(coord, rid) for _ in range(5)] == [1, 2, 3, 4, 5]
        assert misses == [(rid, b"count")]  # only the first read went to SQLite
        assert coord.store.state_get(rid, b"count") == struct.pack("<q", 5)


def test_a_write_by_another_process_is_seen_at_once(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path) as coord:
        rid = coord.deploy(COUNTER_WAT, "wasm", capabilities=["storage"], source_format="wat")
        assert [count(coord, rid) for _ in range(3)] == [1, 2, 3]  # cached: 3
        done = run_cli("exec", rid, data_dir=tmp_path)  # another process: 4
        assert done.returncode == 0, done.stderr
        misses = cache_reads(coord)
        assert count(coord, rid) == 5  # not 4: the cached 3 was dropped
        assert misses == [(rid, b"count")]
        assert count(coord, rid) == 6 and len(misses) == 1  # and cached again


class VetoEvents:
    """Refuses the commit of any execution emitting the event b"veto"."""

    def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None:
        if any(e.value == b"veto" for e in effects):
            raise InvalidRequest("vetoed")

    def commit(self, execution_id: str) -> None:
        pass

    def rollback(self, execution_id: str) -> None:
        pass

    @hookimpl
    def coordinator_register_effect_processors(self, config: Any) -> list[EffectProcessorRecord]:
        return [EffectProcessorRecord(name="veto", processor=self, kinds={"event"}, order=200)]


def test_a_vetoed_write_never_reaches_the_cache(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path, plugins=[EchoPlugin(), VetoEvents()]) as coord:
        rid = coord.deploy(b"echo", "echo", capabilities=["storage"])

        def write(data: bytes) -> Any:
            return coord.execute(ExecutionRequest(resource_id=rid, entry="write", input=data))

        assert write(b"one").ok
        refused = write(b"veto")  # the state processor wrote it, the veto rolled it back
        assert not refused.ok and refused.error is not None
        assert refused.error.kind.value == "invalid_request"
        assert write(b"two").output == b"one"
        assert write(b"three").output == b"two"


class Mirror:
    """An engine whose effect asks a processor to write *another* resource's state, and that
    processor: a writer that does not hold that resource's state lock."""

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        target = ctx.request.input
        assert isinstance(target, bytes)
        return EngineResult(output=b"", fee_used=1,
                            effects=(Effect("mirror", ctx.resource.id, target, b"mirrored"),))

    def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None:
        for effect in effects:
            txn.put_state(effect.key.decode(), b"last", effect.value)

    def commit(self, execution_id: str) -> None:
        pass

    def rollback(self, execution_id: str) -> None:
        pass

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name="mirror", engine=self, resource_types={"mirror"})]

    @hookimpl
    def coordinator_register_effect_processors(self, config: Any) -> list[EffectProcessorRecord]:
        return [EffectProcessorRecord(name="mirror", processor=self, kinds={"mirror"})]


def test_a_processor_writing_another_resources_state_invalidates_its_cache(
        tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path, plugins=[EchoPlugin(), Mirror()]) as coord:
        echo = coord.deploy(b"echo", "echo", capabilities=["storage"])
        mirror = coord.deploy(b"mirror", "mirror")

        def write(data: bytes) -> bytes:
            result = coord.execute(ExecutionRequest(resource_id=echo, entry="write", input=data))
            assert result.ok, result.error
            return bytes(result.output)

        write(b"one")
        assert write(b"two") == b"one"  # "two" is cached as committed
        assert coord.execute(ExecutionRequest(resource_id=mirror, input=echo.encode())).ok
        assert write(b"three") == b"mirrored"


def test_stamps_are_shared_by_every_opener_of_the_file(tmp_path: Path) -> None:
    """Two ``Stamps`` on one file, as two processes have: a stamp put by one is read by the
    other, and every stamp is new."""
    first, second = Stamps(tmp_path / "s"), Stamps(tmp_path / "s")
    slot = first.slot("ab" * 32)
    assert slot == second.slot("ab" * 32)
    seen = {first.read(slot)}
    for stamps in (first, second, first, second):
        previous, new = stamps.stamp(slot)
        assert previous in seen and new not in seen
        assert first.read(slot) == second.read(slot) == new
        seen.add(new)
    first.close()
    second.close()


def test_the_cache_starts_over_past_its_bounds(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statecache, "MAX_VALUES", 10)
    stamps = Stamps(tmp_path / "s")
    reads: list[bytes] = []

    def read(resource_id: str, key: bytes) -> bytes:
        reads.append(key)
        return b"disk"

    cache = StateCache(stamps, read)
    get = cache.reader("r")
    keys = [bytes([n]) for n in range(10)]
    previous, stamp = stamps.stamp(stamps.slot("r"))
    cache.committed("r", previous, stamp, {k: k * 2 for k in keys})
    for _ in range(1000):  # overwriting the same keys does not fill the cache
        cache.committed("r", stamp, stamp, {keys[0]: b"new"})
    assert [get(k) for k in keys] == [b"new", *(k * 2 for k in keys[1:])]
    assert reads == []
    assert get(b"x") == b"disk"  # the eleventh value: everything is dropped
    assert get(keys[1]) == b"disk" and len(reads) == 2
    stamps.close()


def test_only_a_commit_creates_an_entry_and_a_read_joins_it_only_under_its_stamp(
        tmp_path: Path) -> None:
    stamps = Stamps(tmp_path / "s")
    disk = {b"a": b"1", b"b": b"2"}
    reads: list[bytes] = []

    def read(resource_id: str, key: bytes) -> bytes | None:
        reads.append(key)
        return disk.get(key)

    cache = StateCache(stamps, read)
    get = cache.reader("r")
    assert get(b"a") == b"1" and get(b"a") == b"1"
    assert reads == [b"a", b"a"]  # never written here: nothing cached
    slot = stamps.slot("r")
    previous, stamp = stamps.stamp(slot)
    disk[b"a"] = b"10"
    cache.committed("r", previous, stamp, {b"a": b"10", b"gone": None})
    reads.clear()
    assert (get(b"a"), get(b"gone"), get(b"b"), get(b"b")) == (b"10", None, b"2", b"2")
    assert reads == [b"b"]  # "b" joined the entry under its stamp
    stamps.stamp(slot)  # another writer begins: the entry is stale from now on
    assert get(b"a") == b"10" and reads == [b"b", b"a"]
    previous, stamp = stamps.stamp(slot)  # this process writes "a" after that writer: the
    cache.committed("r", previous, stamp, {b"a": b"11"})  # entry keeps nothing else
    disk.update({b"a": b"11", b"b": b"3"})
    reads.clear()
    assert (get(b"a"), get(b"b")) == (b"11", b"3") and reads == [b"b"]
    stamps.close()


class KV:
    """Resource type ``kv``: entry ``get`` returns ``last``; ``append`` appends the input to
    it; ``delete`` removes it."""

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        rid, entry = ctx.resource.id, ctx.request.entry
        data = ctx.request.input if isinstance(ctx.request.input, bytes) else b""
        last = ctx.state_get(b"last")
        if entry == "append":
            value = (last or b"") + data
            return EngineResult(output=value, fee_used=1,
                                effects=(Effect("state.set", rid, b"last", value),))
        if entry == "delete":
            return EngineResult(output=b"", fee_used=1,
                                effects=(Effect("state.delete", rid, b"last", b""),))
        return EngineResult(output=last, fee_used=1)

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name="kv", engine=self, resource_types={"kv"})]


class PausingMirror(Mirror):
    """``Mirror`` whose commit waits, its transaction open, until the test lets it go."""

    def __init__(self) -> None:
        self.in_flight = threading.Event()
        self.go_on = threading.Event()

    def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None:
        super().prepare(execution_id, effects, txn)
        self.in_flight.set()
        assert self.go_on.wait(10)


def test_a_read_overlapping_another_writers_open_transaction_is_not_cached(
        tmp_path: Path) -> None:
    """B (another store on the directory, as another process) has written and stamped the
    resource and not committed yet; A reads it meanwhile: the old value, which A must not
    keep once B has committed."""
    mirror_plugin = PausingMirror()
    with Coordinator.open(data_dir=tmp_path, plugins=[KV()], entry_points=False) as a, \
            Coordinator.open(data_dir=tmp_path, plugins=[KV(), mirror_plugin],
                             entry_points=False) as b:
        kv = a.deploy(b"kv", "kv", capabilities=["storage"])
        mirror = b.deploy(b"mirror", "mirror")

        def run(entry: str, data: bytes = b"") -> Any:
            result = a.execute(ExecutionRequest(resource_id=kv, entry=entry, input=data))
            assert result.ok, result.error
            return result.output

        assert run("append", b"one") == b"one"  # cached by its commit
        writer = threading.Thread(target=b.execute, args=(
            ExecutionRequest(resource_id=mirror, input=kv.encode()),))
        writer.start()
        assert mirror_plugin.in_flight.wait(10)  # written and stamped, not committed
        cache = a.store._state_cache  # type: ignore[attr-defined]
        read, overlapped = cache._read, threading.Event()

        def read_then_signal(resource_id: str, key: bytes) -> bytes | None:
            value = read(resource_id, key)
            overlapped.set()
            return value

        cache._read = read_then_signal
        cache._readers.clear()
        outputs: list[Any] = []
        reader = threading.Thread(target=lambda: outputs.append(run("get")))
        reader.start()  # its audit commit waits for B's transaction
        assert overlapped.wait(10)
        mirror_plugin.go_on.set()
        writer.join()
        reader.join()
        assert outputs == [b"one"]  # what was committed when it read
        assert run("get") == b"mirrored"
        assert run("append", b"X") == b"mirroredX"


def test_a_write_through_another_store_on_the_directory_is_seen(tmp_path: Path) -> None:
    """Two coordinators on one directory have separate caches and mappings of the stamps,
    as two processes do; each sees the other's writes, and a write of another key does not
    carry a value the other store replaced into its cache."""
    with Coordinator.open(data_dir=tmp_path, plugins=[KV()], entry_points=False) as a, \
            Coordinator.open(data_dir=tmp_path, plugins=[KV(), Mirror()],
                             entry_points=False) as b:
        kv = a.deploy(b"kv", "kv", capabilities=["storage"])
        mirror = b.deploy(b"mirror", "mirror")

        def run(coord: Coordinator, entry: str, data: bytes = b"") -> Any:
            result = coord.execute(ExecutionRequest(resource_id=kv, entry=entry, input=data))
            assert result.ok, result.error
            return result.output

        assert run(a, "append", b"one") == b"one"
        assert run(b, "append", b"two") == b"onetwo"
        assert run(a, "get") == b"onetwo"
        assert b.execute(ExecutionRequest(resource_id=mirror, input=kv.encode())).ok
        assert run(a, "append", b"!") == b"mirrored!"
        assert run(b, "get") == b"mirrored!"


def test_a_removed_key_is_cached_as_absent(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path, plugins=[KV()], entry_points=False) as coord:
        kv = coord.deploy(b"kv", "kv", capabilities=["storage"])
        misses = cache_reads(coord)
        request = ExecutionRequest(resource_id=kv, entry="append", input=b"x")
        assert coord.execute(request).output == b"x"
        assert coord.execute(ExecutionRequest(resource_id=kv, entry="delete")).ok
        assert coord.execute(ExecutionRequest(resource_id=kv)).output is None
        assert coord.store.state_get(kv, b"last") is None
        assert misses == [(kv, b"last")]  # only the very first read


def test_the_memory_store_reads_state_through_the_same_call(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=":memory:", plugins=[KV()], entry_points=False) as coord:
        kv = coord.deploy(b"kv", "kv", capabilities=["storage"])
        get = coord.store.state_reader(kv)
        assert get(b"last") is None
        coord.execute(ExecutionRequest(resource_id=kv, entry="append", input=b"m"))
        assert get(b"last") == b"m"


def test_two_resources_on_one_lock_byte_keep_it_until_both_are_released(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record locks belong to the process: releasing one of two resources sharing a byte of
    state.lock must not let another process take the other."""
    monkeypatch.setattr(locks, "SLOTS", 1)
    path = tmp_path / "state.lock"
    mine = locks.ResourceLocks(path)
    assert mine.acquire("r1", 0.0) and mine.acquire("r2", 0.0)

    def other_process_gets(resource_id: str) -> bool:
        code = ("import sys; from pathlib import Path; "
                "from coordinator_core.execution import locks; "
                "locks.SLOTS = 1; "
                f"print(locks.ResourceLocks(Path(sys.argv[1])).acquire({resource_id!r}, 0.0))")
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                              text=True, timeout=60, check=True)
        return done.stdout.strip() == "True"

    mine.release("r1")
    assert not other_process_gets("r2")  # r2 is still held here
    mine.release("r2")
    assert other_process_gets("r2")
    mine.close()


def test_coordinators_on_one_directory_in_one_process_share_the_state_locks(
        tmp_path: Path) -> None:
    first = locks.shared_locks(tmp_path / "state.lock")
    (tmp_path / "link").symlink_to(tmp_path)
    second = locks.shared_locks(tmp_path / "link" / "state.lock")
    assert first is second
    assert first.acquire("r", 0.0) and not second.acquire("r", 0.0)
    second.close()  # the other user goes on holding its lock
    assert not first.acquire("r", 0.0)
    first.release("r")
    first.close()


def test_releasing_a_lock_not_held_changes_nothing(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "SLOTS", 1)
    mine = locks.ResourceLocks(tmp_path / "state.lock")
    assert mine.acquire("r1", 0.0)
    with pytest.raises(RuntimeError, match="not held"):
        mine.release("r2")  # a caller bug: it must not unlock the byte r1 holds
    assert mine._holders == {0: 1}
    mine.release("r1")
    assert mine._holders == {}
    mine.close()


class BrokenEngine:
    """An engine whose ``bind_host_functions`` fails: ``Coordinator.open`` fails after the
    state locks were taken."""

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        raise AssertionError("never runs")

    def bind_host_functions(self, records: Any) -> None:
        raise RuntimeError("cannot bind")

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name="broken", engine=self, resource_types={"broken"})]


def test_a_coordinator_failing_to_open_gives_back_the_shared_state_locks(
        tmp_path: Path) -> None:
    def shared() -> int:
        info = (tmp_path / "state.lock").stat()
        entry = locks._SHARED.get(f"{info.st_dev}:{info.st_ino}")
        return entry[1] if entry else 0

    with pytest.raises(RuntimeError, match="cannot bind"):
        Coordinator.open(data_dir=tmp_path, plugins=[BrokenEngine()], entry_points=False)
    assert shared() == 0
    with Coordinator.open(data_dir=tmp_path, entry_points=False):
        assert shared() == 1
    assert shared() == 0


def test_a_read_joining_an_entry_and_a_commit_moving_it_do_not_interleave(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read stores its value while a commit of this process moves the same entry to a new
    stamp: the commit waits, so the read's older value never lands under the new stamp."""
    stamps = Stamps(tmp_path / "s")
    cache = StateCache(stamps, lambda resource_id, key: b"old")
    slot = stamps.slot("r")
    previous, first = stamps.stamp(slot)
    cache.committed("r", previous, first, {b"a": b"1"})
    storing, go_on = threading.Event(), threading.Event()
    keep = StateCache._keep

    def slow_keep(self: StateCache, entry: Any, key: bytes, value: bytes | None) -> bool:
        if value == b"old":  # the read's store: hold it there
            storing.set()
            assert go_on.wait(10)
        return keep(self, entry, key, value)

    monkeypatch.setattr(StateCache, "_keep", slow_keep)
    reader = threading.Thread(target=cache.reader("r"), args=(b"k",))
    reader.start()
    assert storing.wait(10)
    _, second = stamps.stamp(slot)  # a commit of b"k" = b"new" by this process
    writer = threading.Thread(target=cache.committed, args=("r", first, second,
                                                            {b"k": b"new"}))
    writer.start()
    go_on.set()
    reader.join()
    writer.join()
    assert cache.reader("r")(b"k") == b"new"
    stamps.close()


def test_a_forked_child_puts_stamps_of_its_own(tmp_path: Path) -> None:
    import os

    stamps = Stamps(tmp_path / "s")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one stamp, reported to the parent
        os.close(read)
        os.write(write, stamps.stamp(0)[1].to_bytes(8, "little"))
        os._exit(0)
    os.close(write)
    child_stamp = int.from_bytes(os.read(read, 8), "little")
    os.close(read)
    os.waitpid(pid, 0)
    parent_stamp = stamps.stamp(0)[1]
    assert child_stamp != parent_stamp and stamps.read(0) == parent_stamp
    stamps.close()
