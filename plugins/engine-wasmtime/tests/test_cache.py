"""The compiled-module cache: compile once, LRU in memory, sealed artifacts on disk."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from coordinator_engine_wasmtime import _capi
from coordinator_hookspecs import EngineError

GROW = """(module (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"""


def _big_module(functions: int) -> str:
    """About 100 bytes of code per function: 1000 functions make a ~100 KB contract."""
    body = " ".join(f"(i32.add (local.get 0) (i32.const {n}))" for n in range(20))
    funcs = "".join(f"(func $f{i} (param i32) (result i32) {body} "
                    + "(drop) " * 19 + ")" for i in range(functions))
    return f'(module {funcs} (func (export "main") (param i32) (result i32) (call $f0 '\
           '(local.get 0))))'


def _artifacts(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "wasmtime-cache").glob("*.cwasm"))


def test_a_100_kb_contract_compiles_once_and_loads_from_disk_after_a_restart(
        harness_factory: Any, tmp_path: Path) -> None:
    first = harness_factory(tmp_path)
    big = first.deploy(_big_module(1000))
    assert len(big.code) > 100_000
    for n in range(3):
        assert first.run(big, args=[n]).output == [n]
    stats = first.engine.cache_stats()
    assert stats["compiles"] == 1 and stats["hits"] >= 3
    assert first.engine.holds(big.resource.id)
    assert len(_artifacts(tmp_path)) == 1

    restarted = harness_factory(tmp_path)
    assert not restarted.engine.holds(big.resource.id)
    assert restarted.run(big, args=[5]).output == [5]
    assert restarted.engine.cache_stats() | {"hits": 0} == {
        "hits": 0, "disk_loads": 1, "compiles": 0, "evictions": 0}


def test_a_tampered_artifact_is_never_loaded(harness_factory: Any, tmp_path: Path) -> None:
    first = harness_factory(tmp_path)
    grow = first.deploy(GROW)
    (artifact,) = _artifacts(tmp_path)
    data = bytearray(artifact.read_bytes())
    data[-100] ^= 0xFF
    artifact.write_bytes(bytes(data))
    second = harness_factory(tmp_path)
    assert second.run(grow, entry="grow", args=[0]).output == [1]
    assert second.engine.cache_stats()["disk_loads"] == 0
    assert second.engine.cache_stats()["compiles"] == 1


def test_an_artifact_sealed_with_another_secret_is_ignored(harness_factory: Any,
                                                          tmp_path: Path) -> None:
    elsewhere = tmp_path / "other"
    foreign = harness_factory(elsewhere)
    grow = foreign.deploy(GROW)
    ours = tmp_path / "ours"
    (ours / "wasmtime-cache").mkdir(parents=True)
    harness_factory(ours)  # creates this directory's secret
    (artifact,) = _artifacts(elsewhere)
    for path in (artifact, artifact.with_suffix(".seal")):  # a complete, foreign pair
        (ours / "wasmtime-cache" / path.name).write_bytes(path.read_bytes())
    local = harness_factory(ours)
    assert local.run(grow, entry="grow", args=[0]).output == [1]
    assert local.engine.cache_stats()["disk_loads"] == 0


def test_a_different_engine_config_uses_different_artifacts(harness_factory: Any,
                                                           tmp_path: Path) -> None:
    grow = harness_factory(tmp_path).deploy(GROW)
    other = harness_factory(tmp_path, max_wasm_stack=256 * 1024)
    assert other.run(grow, entry="grow", args=[0]).output == [1]
    assert other.engine.cache_stats()["compiles"] == 1
    assert len(_artifacts(tmp_path)) == 2


def test_the_memory_cache_is_a_bounded_lru(harness_factory: Any) -> None:
    harness = harness_factory(memory_cache_entries=2)
    modules = [harness.deploy(f'(module (func (export "main") (result i32) (i32.const {n})))')
               for n in range(3)]
    holds = [harness.engine.holds(m.resource.id) for m in modules]
    assert holds == [False, True, True]
    assert harness.run(modules[0], args=[]).output == [0]  # reloaded from disk
    assert harness.engine.cache_stats()["disk_loads"] == 1
    assert harness.engine.cache_stats()["evictions"] == 2


def test_without_a_disk_cache_nothing_is_written(harness_factory: Any, tmp_path: Path) -> None:
    harness = harness_factory(tmp_path, disk_cache=False)
    harness.deploy(GROW)
    assert not (tmp_path / "wasmtime-cache").exists()


def test_code_that_does_not_match_its_id_is_refused(harness_factory: Any) -> None:
    harness = harness_factory(disk_cache=False)
    grow = harness.deploy(GROW)
    fresh = harness_factory(disk_cache=False)  # nothing cached: it must load the code
    context = harness.context(grow, entry="grow", args=[0])
    context.load_code = lambda: harness.engine.canonical_code("(module)", "wat")
    with pytest.raises(EngineError, match="does not match its sha256 id"):
        fresh.engine.execute(context)


def test_an_artifact_others_can_write_is_never_loaded(harness_factory: Any,
                                                      tmp_path: Path) -> None:
    grow = harness_factory(tmp_path).deploy(GROW)
    (artifact,) = _artifacts(tmp_path)
    artifact.chmod(0o666)
    second = harness_factory(tmp_path)
    assert second.run(grow, entry="grow", args=[0]).output == [1]
    assert second.engine.cache_stats()["disk_loads"] == 0


def test_artifacts_are_sealed_private_files(harness_factory: Any, tmp_path: Path) -> None:
    harness_factory(tmp_path).deploy(GROW)
    cache = tmp_path / "wasmtime-cache"
    assert cache.stat().st_mode & 0o777 == 0o700
    (artifact,) = _artifacts(tmp_path)
    for path in (artifact, artifact.with_suffix(".seal"), cache / "secret"):
        assert path.stat().st_mode & 0o777 == 0o600
    assert artifact.read_bytes()[:4] == b"\x7fELF"  # wasmtime's bytes, mapped as they are


def test_the_in_memory_data_dir_writes_nothing(harness_factory: Any, tmp_path: Path,
                                               monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    harness = harness_factory(Path(":memory:"))
    harness.deploy(GROW)
    assert list(tmp_path.iterdir()) == []


def test_a_slow_compile_does_not_hold_up_other_cold_loads(harness_factory: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Misses of different modules compile in parallel; only misses of one hash wait for each
    other. The compile of ``big`` is held open (wasmtime's compile is the collaborator here)
    while ``small`` is loaded cold."""
    harness = harness_factory(disk_cache=False)
    big, small = harness.deploy(_big_module(50)), harness.deploy(GROW)
    harness.engine._cache.clear()
    compiled_before = harness.engine.cache_stats()["compiles"]
    real, entered, release = _capi.compile_module, threading.Event(), threading.Event()

    def compile_module(engine: int, wasm: bytes) -> int:
        if wasm == big.code:
            entered.set()
            assert release.wait(10)
        return real(engine, wasm)

    monkeypatch.setattr(_capi, "compile_module", compile_module)
    results: list[Any] = []
    slow = threading.Thread(target=lambda: results.append(harness.run(big, args=[7])))
    slow.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        assert harness.run(small, entry="grow", args=[0]).output == [1]
        assert time.monotonic() - started < 2.0  # did not wait for the big compile
    finally:
        release.set()
        slow.join(10)
    assert results and results[0].output == [7]
    assert harness.engine.cache_stats()["compiles"] == compiled_before + 2
    assert len(harness.engine._misses) == 0  # no lock left behind
