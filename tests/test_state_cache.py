"""The committed-state cache (``store/statecache.py``): executions of a stateful resource read
the values its last execution committed from memory, and never a stale one: not after
another process wrote (the CLI beside a running coordinator), not after a vetoed commit, not
after an effect processor wrote another resource's state."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest
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
        return key * 2

    cache = StateCache(stamps, read)
    get = cache.reader("r")
    keys = [bytes([n]) for n in range(10)]
    assert [get(k) for k in keys] == [k * 2 for k in keys]
    assert [get(k) for k in keys] == [k * 2 for k in keys]
    assert len(reads) == 10  # all ten cached
    get(b"x")  # the eleventh: everything is dropped
    get(keys[0])
    assert len(reads) == 12
    stamps.close()
