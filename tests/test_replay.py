"""``coordinator replay``: kept requests and the re-execution of a log into a fresh directory.

One source directory is built per module: 10,000 mixed executions (counter and token through
``submit``, hybrid transfers calling the ONNX model, the model itself, traps, security
rejections, fee exhaustion, cancels and timeouts, a policy change) with the real engines and
store. It is replayed through the real CLI in a subprocess; the tests that change something
(a host function's fee in the config, a contract's bytes in a copy of the source) check that
the replay names the first divergent execution, computed independently from the source log.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.cli.demo_workload import FRIENDS, TREASURY, score_request, setup, u64
from coordinator_core.store import SqliteStore
from coordinator_hookspecs import AccessPolicy, InvalidRequest
from tests.helpers import COUNTER_WAT, cli_json, run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOTAL = 10_000
#: Loops until its fee runs out, it is cancelled or it times out; holds no state lock.
SPIN_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "main") (loop $forever (br $forever))))
"""


def _build(path: Path) -> dict[str, Any]:
    """The source directory: TOTAL top-level executions of every kind, in a seeded order."""
    with Coordinator.open(data_dir=path) as coord:
        world = setup(coord, EXAMPLES)
        counter = coord.deploy(COUNTER_WAT, "wasm", name="counter", capabilities=["storage"],
                               source_format="wat")
        spin = coord.deploy(SPIN_WAT, "wasm", name="spin", source_format="wat")
        done = coord.store.audit_records()
        setup_count = sum(1 for r in done if r.record_kind == "execution")
        handles: list[Any] = []
        statuses: Counter[str] = Counter()

        def settle() -> None:
            for handle in handles:
                statuses[handle.result().status.value] += 1
            handles.clear()

        def submit(request: ExecutionRequest) -> Any:
            handle = coord.submit(request)
            handles.append(handle)
            if len(handles) >= 128:
                settle()
            return handle

        n = TOTAL - setup_count
        for i in range(n):
            caller = FRIENDS[i % 3]
            slot = i % 100
            if slot < 55:
                submit(ExecutionRequest(resource_id=counter, caller=caller))
            elif slot < 85:
                to = FRIENDS[(i + 1) % 3]
                amount = 1 + (i * 7919) % 300_000  # some exceed the balance: a trap
                submit(ExecutionRequest(resource_id=world.token, caller=caller,
                                        entry="transfer", input=u64(amount) + to.encode()))
            elif slot < 88:
                submit(ExecutionRequest(resource_id=world.token, caller="mallory",
                                        entry="transfer", input=u64(1) + b"alice"))
            elif slot < 91:
                submit(ExecutionRequest(resource_id=world.hybrid, caller=caller,
                                        entry="transfer",
                                        input=u64(10 + (i * 31) % 900) + b"bob"))
            elif slot < 93:
                submit(score_request(world.model, caller, (i * 13) % 5000, 1000))
            elif slot < 96:
                submit(ExecutionRequest(resource_id=spin, caller=caller, fee_limit=20_000))
            elif slot < 97:
                submit(ExecutionRequest(resource_id=counter, caller=caller, entry="missing"))
            elif slot < 98 and i % 300 == 97:
                settle()
                handle = coord.submit(ExecutionRequest(resource_id=spin, caller=caller,
                                                       fee_limit=10**12, timeout=5.0))
                coord.cancel(handle.execution_id)
                handles.append(handle)
            elif slot < 98 and i % 300 == 197:
                submit(ExecutionRequest(resource_id=spin, caller=caller, fee_limit=10**12,
                                        timeout=0.01))
            else:
                submit(ExecutionRequest(resource_id=world.token, caller=caller,
                                        entry="balance", input=caller.encode()))
            if i == n // 2:
                settle()
                coord.set_policy(world.token, AccessPolicy(deny=frozenset({"mallory", "bob"})),
                                 caller=TREASURY)
        settle()
    return {"token": world.token, "hybrid": world.hybrid, "model": world.model,
            "counter": counter, "statuses": statuses}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("replay") / "source"
    return path, _build(path)


def _records(path: Path) -> list[Any]:
    store = SqliteStore(path)
    try:
        return list(store.audit_records())
    finally:
        store.close()


def _top(records: list[Any]) -> list[Any]:
    return [r for r in records if r.record_kind == "execution" and r.parent_id is None]


def test_ten_thousand_mixed_executions_replay_identically(
        source: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, built = source
    records = _records(path)
    top = _top(records)
    assert len(top) == TOTAL
    kinds = Counter((r.status, r.error_kind) for r in top)
    for wanted in [("succeeded", None), ("failed", "trap"), ("failed", "fee_exhausted"),
                   ("rejected", "security_rejected"), ("cancelled", "cancelled"),
                   ("timed_out", "timeout")]:
        assert kinds[wanted] > 0, (wanted, kinds)
    assert any(r.parent_id for r in records)  # hybrid transfers called the model

    into = tmp_path / "replayed"
    code, report = cli_json("replay", "--into", str(into), data_dir=path)
    assert code == 0, report
    assert report["ok"] and report["divergence"] is None
    recorded = sum(1 for r in top if r.status in ("cancelled", "timed_out"))
    assert report["recorded"] == recorded
    assert report["replayed"] == TOTAL - recorded
    assert report["deploys"] == 5 and report["policies"] == 1
    assert report["identical_through"] == len(records)

    again = _top(_records(into))
    assert len(again) == TOTAL
    for a, b in zip(top, again, strict=True):
        assert (a.status, a.error_kind, a.fee_used, a.effect_digest, a.detail.get("output"),
                a.detail.get("request")) == (b.status, b.error_kind, b.fee_used,
                                             b.effect_digest, b.detail.get("output"),
                                             b.detail.get("request")), a.seq
        for key in ("state_root", "global_root"):
            assert a.detail.get(key) == b.detail.get(key)
    src, dst = SqliteStore(path), SqliteStore(into)
    try:
        for rid in (built["token"], built["hybrid"], built["counter"]):
            assert src.state_items(rid) == dst.state_items(rid)
            assert src.state_items(rid)
        assert dst.verify().ok
    finally:
        src.close()
        dst.close()


def _first_model_call(records: list[Any]) -> Any:
    parents = {r.parent_id for r in records if r.parent_id}
    return next(r for r in _top(records) if r.execution_id in parents)


def test_a_changed_host_function_fee_names_the_first_divergent_execution(
        source: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, _built = source
    expected = _first_model_call(_records(path))
    config = tmp_path / "coordinator.toml"
    config.write_text("[hybrid]\nfee_per_call = 1001\n")
    code, report = cli_json("--config", str(config), "replay", "--into", str(tmp_path / "d"),
                            "--until", str(expected.seq + 50), data_dir=path)
    assert code == 1, report
    found = report["divergence"]
    assert (found["seq"], found["execution_id"]) == (expected.seq, expected.execution_id)
    assert found["differences"]["fee_used"] == {"source": expected.fee_used,
                                                "replay": expected.fee_used + 1}
    assert report["identical_through"] == expected.seq - 1

    text = run_cli("--config", str(config), "replay", "--into", str(tmp_path / "t"),
                   "--until", str(expected.seq), data_dir=path)
    assert text.returncode == 1
    assert f"DIVERGED at record {expected.seq}" in text.stdout
    assert expected.execution_id in text.stdout and "fee_used" in text.stdout


def test_changed_contract_bytes_name_the_first_divergent_execution(
        source: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, built = source
    copy = tmp_path / "source"
    shutil.copytree(path, copy)
    counter = built["counter"]
    changed = wasmtime.wat2wasm(COUNTER_WAT.replace("(i64.const 1)", "(i64.const 2)"))
    assert changed != wasmtime.wat2wasm(COUNTER_WAT)
    (copy / "resources" / counter[:2] / counter).write_bytes(changed)
    records = _records(copy)
    expected = next(r for r in _top(records)
                    if r.resource_id == counter and r.status == "succeeded")
    code, report = cli_json("replay", "--into", str(tmp_path / "d"),
                            "--until", str(expected.seq + 20), data_dir=copy)
    assert code == 1, report
    found = report["divergence"]
    assert (found["seq"], found["execution_id"]) == (expected.seq, expected.execution_id)
    assert set(found["differences"]) >= {"output", "effect_digest"}
    assert any(counter in note for note in report["notes"])


def test_until_replays_a_prefix(source: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, _built = source
    code, report = cli_json("replay", "--into", str(tmp_path / "d"), "--until", "300",
                            data_dir=path)
    assert code == 0, report
    assert report["records"] == 300 and report["identical_through"] == 300
    wanted = [r for r in _top(_records(path)) if r.seq <= 300]
    assert [r.detail["request"] for r in _top(_records(tmp_path / "d"))] == \
        [r.detail["request"] for r in wanted]
    bad = run_cli("replay", "--into", str(tmp_path / "e"), "--until", "0", data_dir=path)
    assert bad.returncode == 2 and "--until" in bad.stderr


def test_replay_refuses_a_destination_that_is_not_empty(
        source: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, _built = source
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "something").write_text("x")
    code, report = cli_json("replay", "--into", str(tmp_path / "d"), data_dir=path)
    assert code == 2
    assert report["error"]["kind"] == "invalid_request"
    assert "not empty" in report["error"]["message"]
    assert (tmp_path / "d").iterdir() and not (tmp_path / "d" / "coordinator.db").exists()


def _small(path: Path, **store: Any) -> str:
    with Coordinator.open(data_dir=path, overrides={"store": store} if store else None) as c:
        rid = c.deploy(COUNTER_WAT, "wasm", capabilities=["storage"], source_format="wat")
        for caller in ("alice", "bob", "alice"):
            assert c.execute(ExecutionRequest(resource_id=rid, caller=caller)).ok
    return rid


def test_replay_refuses_a_log_without_kept_requests(tmp_path: Path) -> None:
    _small(tmp_path / "src", keep_requests=False)
    code, report = cli_json("replay", "--into", str(tmp_path / "d"), data_dir=tmp_path / "src")
    assert code == 2
    assert report["error"]["kind"] == "invalid_request"
    assert "keep_requests" in report["error"]["message"]
    assert not (tmp_path / "d").exists()


def test_replay_verifies_the_source_chain_first(tmp_path: Path) -> None:
    _small(tmp_path / "src")
    conn = sqlite3.connect(tmp_path / "src" / "coordinator.db")
    conn.execute("UPDATE audit SET fee_used = fee_used + 1 WHERE seq = 3")
    conn.commit()
    conn.close()
    code, report = cli_json("replay", "--into", str(tmp_path / "d"), data_dir=tmp_path / "src")
    assert code == 2
    assert "does not verify" in report["error"]["message"]
    assert "record 3" in report["error"]["message"]
    assert not (tmp_path / "d").exists()


def test_replay_refuses_a_kept_request_edited_in_place(tmp_path: Path) -> None:
    _small(tmp_path / "src")
    conn = sqlite3.connect(tmp_path / "src" / "coordinator.db")
    conn.execute("UPDATE requests SET body = CAST(replace(body, 'alice', 'mallo') AS BLOB)")
    conn.commit()
    conn.close()
    code, report = cli_json("replay", "--into", str(tmp_path / "d"), data_dir=tmp_path / "src")
    assert code == 2
    assert "corrupt" in report["error"]["message"]
    assert not (tmp_path / "d").exists()


def test_requests_are_kept_through_the_worker_process_writer(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with Coordinator.open(data_dir=src, overrides={"coordinator": {"processes": 1}}) as c:
        rid = c.deploy(COUNTER_WAT, "wasm", capabilities=["storage"], source_format="wat")
        handles = [c.submit(ExecutionRequest(resource_id=rid, caller=f"c{i % 4}"))
                   for i in range(40)]
        outputs = [h.result().output for h in handles]
    assert sorted(outputs) == sorted(struct.pack("<q", n) for n in range(1, 41))
    store = SqliteStore(src)
    try:
        top = _top(list(store.audit_records()))
        assert len(top) == 40
        for record in top:
            body = store.kept_request(record.detail["request"])
            assert body is not None and rid.encode() in body
    finally:
        store.close()
    code, report = cli_json("replay", "--into", str(tmp_path / "d"), data_dir=src)
    assert code == 0, report
    assert report["replayed"] == 40


def test_kept_values_round_trip() -> None:
    import numpy as np

    from coordinator_core.store.requests import decode_value, encode_value, request_of

    value = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": [1, 2.5, b"\x00", "t"]}
    back = decode_value(encode_value(value))
    assert back["y"] == [1, 2.5, b"\x00", "t"]
    assert back["x"].dtype == np.float32 and (back["x"] == value["x"]).all()
    with pytest.raises(InvalidRequest, match="malformed"):
        request_of(b"{not json")
    with pytest.raises(InvalidRequest, match="layout"):
        request_of(b'{"v": 99}')
