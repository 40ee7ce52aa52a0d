"""Queries and simulations (``coord.query``, ``coord.simulate``) on real engines and stores.

Real wasmtime, the real SQLite store and the whole pipeline: a query reads committed state
and can change nothing (a write, event or log line traps), is capped by ``[coordinator]
query_fee_limit``, and leaves no audit record; a simulation predicts exactly what the
execution then does (output, effects, fee) and commits nothing, nested calls included.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_hookspecs import ErrorKind, NotFound, SimulationResult, Status
from tests.helpers import COUNTER_WAT, cli_json, run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOKEN_WAT = (EXAMPLES / "token.wat").read_text()

#: input: rid (64 hex chars) | payload. Calls the resource through model_infer and outputs
#: code:i32 | its output: a contract that changes nothing itself, calling one that may.
ASK = """
(module
  (import "env" "input_len" (func $input_len (result i32)))
  (import "env" "input_read" (func $input_read (param i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (import "env" "model_infer" (func $infer (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "main")
    (local $n i32) (local $rc i32)
    (local.set $n (call $input_len))
    (call $input_read (i32.const 0))
    (local.set $rc (call $infer (i32.const 0) (i32.const 64) (i32.const 64)
                               (i32.sub (local.get $n) (i32.const 64))
                               (i32.const 4100) (i32.const 256)))
    (i32.store (i32.const 4096) (local.get $rc))
    (call $output_write (i32.const 4096)
          (i32.add (i32.const 4) (select (local.get $rc) (i32.const 0)
                                         (i32.gt_s (local.get $rc) (i32.const 0)))))))
"""

#: ``main`` writes a log line, ``emit`` an event: neither is allowed in a query.
NOISY = """
(module
  (import "env" "log" (func $log (param i32 i32 i32)))
  (import "env" "emit_event" (func $emit (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello")
  (func (export "main") (call $log (i32.const 2) (i32.const 0) (i32.const 5)))
  (func (export "emit") (call $emit (i32.const 0) (i32.const 5))))
"""


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def mint(amount: int, to: bytes) -> ExecutionRequest:
    return ExecutionRequest(resource_id="", caller="treasury", entry="mint",
                            input=u64(amount) + to)


def executions(coord: Coordinator) -> list[Any]:
    return [r for r in coord.audit_records() if r.record_kind == "execution"]


@pytest.fixture
def coord(tmp_path: Path) -> Any:
    with Coordinator.open(data_dir=tmp_path / "data") as coordinator:
        yield coordinator


@pytest.fixture
def counter(coord: Coordinator) -> str:
    return coord.deploy(COUNTER_WAT, "wasm", capabilities=["storage"], source_format="wat")


@pytest.fixture
def token(coord: Coordinator) -> str:
    rid = coord.deploy(TOKEN_WAT, "wasm", capabilities=["storage", "events"],
                       source_format="wat")
    assert coord.execute(ExecutionRequest(resource_id=rid, caller="treasury", entry="mint",
                                          input=u64(1000) + b"alice")).ok
    return rid


def test_query_reads_committed_state(coord: Coordinator, counter: str) -> None:
    get = ExecutionRequest(resource_id=counter, entry="get")
    first = coord.query(get)
    assert first.ok and first.output == u64(0) and first.effects == ()
    for _ in range(3):
        assert coord.execute(ExecutionRequest(resource_id=counter)).ok
    before = len(list(coord.audit_records()))
    results = [coord.query(get) for _ in range(5)]
    assert {r.output for r in results} == {u64(3)}
    assert len({r.fee_used for r in results}) == 1  # deterministic, fee included
    assert len(list(coord.audit_records())) == before  # no record per query
    with pytest.raises(NotFound):  # nor a status to look up
        coord.status(results[0].execution_id)
    dry = coord.metrics()["dry_runs"]["query"]
    assert dry["count"] == 6 and dry["by_status"] == {"succeeded": 6}
    assert dry["fee_used"] == sum(r.fee_used for r in [first, *results])
    assert coord.metrics()["executions"] == 3  # queries are not counted as executions


def test_write_event_or_log_in_a_query_traps_and_leaves_nothing(
        coord: Coordinator, counter: str, token: str) -> None:
    assert coord.execute(ExecutionRequest(resource_id=counter)).ok
    state = {counter: coord.state(counter), token: coord.state(token)}
    events = coord.events(token)
    records = len(list(coord.audit_records()))
    write = coord.query(ExecutionRequest(resource_id=counter))
    assert write.status is Status.FAILED and write.error is not None
    assert write.error.kind is ErrorKind.TRAP
    assert "storage_set inside a query" in write.error.message
    assert write.effects == () and write.output is None and write.fee_used > 0
    transfer = coord.query(ExecutionRequest(resource_id=token, caller="alice",
                                            entry="transfer", input=u64(5) + b"bob"))
    assert transfer.error is not None and transfer.error.kind is ErrorKind.TRAP
    noisy = coord.deploy(NOISY, "wasm", capabilities=["log", "events"], source_format="wat")
    logged = coord.query(ExecutionRequest(resource_id=noisy))
    emitted = coord.query(ExecutionRequest(resource_id=noisy, entry="emit"))
    assert logged.error is not None and "log inside a query" in logged.error.message
    assert emitted.error is not None and "emit_event inside a query" in emitted.error.message
    assert {counter: coord.state(counter), token: coord.state(token)} == state
    assert coord.events(token) == events
    assert len(list(coord.audit_records())) == records + 1  # the noisy deploy only
    balance = coord.query(ExecutionRequest(resource_id=token, entry="balance", input=b"alice"))
    assert balance.ok and balance.output == u64(1000)


def test_query_fee_is_capped_by_query_fee_limit(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path / "d",
                          overrides={"coordinator": {"query_fee_limit": 100}}) as coord:
        counter = coord.deploy(COUNTER_WAT, "wasm", capabilities=["storage"],
                               source_format="wat")
        get = ExecutionRequest(resource_id=counter, entry="get")
        full = coord.execute(get)  # what the read costs, uncapped
        assert full.ok and full.fee_used > 100
        capped = coord.query(get)
        assert capped.error is not None and capped.error.kind is ErrorKind.FEE_EXHAUSTED
        assert "query_fee_limit = 100" in capped.error.message
        assert capped.fee_used <= 100
        # A request's own higher limit does not lift the cap; a lower one lowers it.
        higher = coord.query(ExecutionRequest(resource_id=counter, entry="get",
                                              fee_limit=1_000_000))
        assert higher.error is not None and higher.error.kind is ErrorKind.FEE_EXHAUSTED
        lower = coord.query(ExecutionRequest(resource_id=counter, entry="get", fee_limit=20))
        assert lower.error is not None and lower.fee_used <= 20
        assert "query_fee_limit" not in lower.error.message
    with Coordinator.open(data_dir=tmp_path / "d") as coord:  # the default cap fits it
        assert coord.config.core.query_fee_limit >= full.fee_used
        assert coord.query(get).ok


def test_query_runs_security_validators(coord: Coordinator) -> None:
    from coordinator_hookspecs import AccessPolicy

    rid = coord.deploy(COUNTER_WAT, "wasm", capabilities=["storage"], source_format="wat",
                       owner="olga", policy=AccessPolicy(public=False))
    refused = coord.query(ExecutionRequest(resource_id=rid, caller="mallory", entry="get"))
    assert refused.status is Status.REJECTED and refused.error is not None
    assert refused.error.kind is ErrorKind.SECURITY_REJECTED
    assert coord.query(ExecutionRequest(resource_id=rid, caller="olga", entry="get")).ok
    missing = coord.query(ExecutionRequest(resource_id="0" * 64, entry="get"))
    assert missing.error is not None and missing.error.kind is ErrorKind.NOT_FOUND


def test_simulate_predicts_the_execution_exactly(coord: Coordinator, token: str) -> None:
    state, events = coord.state(token), coord.events(token)
    records = len(list(coord.audit_records()))
    request = ExecutionRequest(resource_id=token, caller="alice", entry="transfer",
                               input=u64(250) + b"bob", fee_limit=1_000_000)
    sim = coord.simulate(request)
    assert isinstance(sim, SimulationResult) and sim.ok
    assert sim.events and all(e.kind == "event" for e in sim.events)
    assert set(sim.events) <= set(sim.effects)
    assert sim.state_root and sim.global_root and sim.state_root != coord.state_root(token)
    # Nothing committed: state, events, the audit log, the ledger.
    assert coord.state(token) == state and coord.events(token) == events
    assert len(list(coord.audit_records())) == records
    with pytest.raises(NotFound):
        coord.status(sim.execution_id)
    real = coord.execute(request)
    assert (real.status, real.output, real.effects, real.fee_used) == (
        sim.status, sim.output, sim.effects, sim.fee_used)
    # ... and the roots its audit record carries are the ones simulate predicted.
    [sealed] = [r for r in coord.audit_records()
                if r.execution_id == real.execution_id and r.record_kind == "execution"]
    assert (sealed.detail["state_root"], sealed.detail["global_root"]) == (
        sim.state_root, sim.global_root)
    # A client sets its fee limit to the simulated fee: the execution fits it exactly.
    again = coord.simulate(request)
    exact = coord.execute(ExecutionRequest(resource_id=token, caller="alice",
                                           entry="transfer", input=u64(250) + b"bob",
                                           fee_limit=again.fee_used))
    assert exact.ok and exact.fee_used == again.fee_used
    short = coord.simulate(ExecutionRequest(resource_id=token, caller="alice",
                                            entry="transfer", input=u64(250) + b"bob",
                                            fee_limit=again.fee_used - 1))
    assert short.error is not None and short.error.kind is ErrorKind.FEE_EXHAUSTED
    assert short.state_root is None and short.global_root is None


def test_simulated_failure_is_the_execution_failure(coord: Coordinator, token: str) -> None:
    request = ExecutionRequest(resource_id=token, caller="alice", entry="transfer",
                               input=u64(10**6) + b"bob")  # more than alice holds: traps
    sim = coord.simulate(request)
    real = coord.execute(request)
    assert sim.status is real.status is Status.FAILED
    assert sim.error is not None and real.error is not None
    assert (sim.error.kind, sim.fee_used, sim.effects) == (real.error.kind, real.fee_used, ())
    assert sim.events == ()


def test_nested_calls_inside_simulate_and_query(coord: Coordinator, counter: str) -> None:
    ask = coord.deploy(ASK, "wasm", capabilities=["models"], source_format="wat")
    call = ExecutionRequest(resource_id=ask, input=counter.encode())
    records = len(list(coord.audit_records()))
    sim = coord.simulate(call)
    assert sim.ok and struct.unpack_from("<i", sim.output)[0] == 8
    assert sim.output[4:] == u64(1)  # the child counted from the committed 0
    assert [e.kind for e in sim.effects] == ["state.set"]  # the child's write, folded in
    assert coord.state(counter) == {}  # ...and not committed
    assert len(list(coord.audit_records())) == records  # no record, the child's neither
    assert coord.ledger.active == {}
    real = coord.execute(call)
    assert (real.output, real.effects, real.fee_used) == (sim.output, sim.effects, sim.fee_used)
    assert coord.state(counter) == {b"count": u64(1)}
    # In a query the child is read-only too: its write traps, the parent sees the failure.
    queried = coord.query(call)
    assert queried.ok and struct.unpack_from("<i", queried.output)[0] < 0
    assert coord.state(counter) == {b"count": u64(1)}
    reads = coord.query(ExecutionRequest(resource_id=ask, input=counter.encode()))
    assert reads.effects == ()
    assert len(list(coord.audit_records())) == records + 2  # the real execution and child


def test_async_forms(coord: Coordinator, counter: str) -> None:
    async def both() -> tuple[Any, Any]:
        return (await coord.query_async(ExecutionRequest(resource_id=counter, entry="get")),
                await coord.simulate_async(ExecutionRequest(resource_id=counter)))

    queried, simulated = asyncio.run(both())
    assert queried.ok and queried.output == u64(0)
    assert isinstance(simulated, SimulationResult) and simulated.output == u64(1)
    assert coord.state(counter) == {}


def test_queries_sampled_into_the_audit_log(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path / "d",
                          overrides={"coordinator": {"query_audit_sample": 0.25}}) as coord:
        counter = coord.deploy(COUNTER_WAT, "wasm", capabilities=["storage"],
                               source_format="wat")
        for _ in range(8):
            assert coord.query(ExecutionRequest(resource_id=counter, entry="get")).ok
        sampled = [r for r in coord.audit_records() if r.record_kind == "query"]
        assert len(sampled) == 2 and executions(coord) == []
        assert sampled[0].resource_id == counter and sampled[0].status == "succeeded"
        assert sampled[0].detail == {"entry": "get"}
        assert coord.metrics()["dry_runs"]["query"]["audited"] == 2
        assert coord.store.verify().ok


def test_query_and_simulate_with_worker_processes(tmp_path: Path) -> None:
    """They run in the coordinator's own process: nothing to commit, committed state shared."""
    with Coordinator.open(data_dir=tmp_path / "d",
                          overrides={"coordinator": {"processes": 1}}) as coord:
        counter = coord.deploy(COUNTER_WAT, "wasm", capabilities=["storage"],
                               source_format="wat")
        assert coord.execute(ExecutionRequest(resource_id=counter)).ok  # in the worker
        queried = coord.query(ExecutionRequest(resource_id=counter, entry="get"))
        assert queried.ok and queried.output == u64(1)
        sim = coord.simulate(ExecutionRequest(resource_id=counter))
        real = coord.execute(ExecutionRequest(resource_id=counter))
        assert (sim.output, sim.effects, sim.fee_used) == (real.output, real.effects,
                                                           real.fee_used)
        assert coord.state(counter) == {b"count": u64(2)}
        assert len(executions(coord)) == 2


def test_cli_query_and_exec_simulate(tmp_path: Path) -> None:
    data = tmp_path / "cli"
    done = run_cli("deploy", str(EXAMPLES / "counter.wat"), "--type", "wasm", "--grant",
                   "storage", data_dir=data)
    assert done.returncode == 0, done.stderr
    rid = done.stdout.strip()
    code, sim = cli_json("exec", rid, "--simulate", data_dir=data)
    assert code == 0 and sim["simulated"] is True and sim["status"] == "succeeded"
    assert sim["effects"][0]["kind"] == "state.set" and sim["events"] == []
    code, real = cli_json("exec", rid, "--fee-limit", str(sim["fee_used"]), data_dir=data)
    assert code == 0 and real["fee_used"] == sim["fee_used"]
    assert real["output"] == sim["output"] and real["effects"] == sim["effects"]
    code, queried = cli_json("query", rid, "--entry", "get", data_dir=data)
    assert code == 0 and queried["output"] == real["output"] and queried["effects"] == []
    code, refused = cli_json("query", rid, data_dir=data)  # main writes: it traps
    assert code == 1 and refused["error"]["kind"] == "trap"
    assert "inside a query" in refused["error"]["message"]
    text = run_cli("query", rid, "--entry", "get", data_dir=data)
    assert text.returncode == 0 and "nothing committed" in text.stdout
    code, verified = cli_json("audit", "verify", data_dir=data)
    assert code == 0 and verified["ok"] is True
    assert verified["count"] == 2  # the deploy and the one real exec


def test_hybrid_contract_and_model_inside_simulate_and_query(coord: Coordinator) -> None:
    """The example hybrid token asking the ONNX risk model (real onnxruntime)."""
    from tests.test_hybrid import Bank

    bank = Bank(coord)
    records = len(list(coord.audit_records()))
    balances = (bank.balance("alice"), bank.balance("bob"))
    transfer = ExecutionRequest(resource_id=bank.hybrid, caller="alice", entry="transfer",
                                input=u64(30) + b"bob")
    sim = coord.simulate(transfer)
    assert sim.ok and sim.output == b"approved"
    assert [e.value[:1] for e in sim.events] == [b"T"]
    assert (bank.balance("alice"), bank.balance("bob")) == balances
    assert len(list(coord.audit_records())) == records  # neither parent nor model recorded
    real = coord.execute(transfer)
    assert (real.output, real.effects, real.fee_used) == (sim.output, sim.effects, sim.fee_used)
    assert [r.resource_id for r in executions(coord)[-2:]] == [bank.model, bank.hybrid]
    balance = coord.query(ExecutionRequest(resource_id=bank.hybrid, entry="balance",
                                           input=b"bob"))
    assert balance.ok and balance.output == u64(balances[1] + 30)
    queried = coord.query(transfer)  # the model answers, then the balance write traps
    assert queried.error is not None and queried.error.kind is ErrorKind.TRAP
    assert "inside a query" in queried.error.message
    assert bank.balance("bob") == balances[1] + 30
