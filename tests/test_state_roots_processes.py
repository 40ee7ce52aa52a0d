"""State roots through the real pipeline: worker processes and the in-process path commit
the same executions to the same roots, and every final record carries them.

The same token and counter workload (mints to many accounts, transfers, one that traps)
runs once in this process and once through two worker processes (whose commits go through
the one writer, ``workers/writer.py``); the roots in each execution's sealed final record and
the final roots must be equal, and every proof must verify."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.store import SqliteStore
from coordinator_core.store.merkle_sqlite import differences
from coordinator_hookspecs import verify_proof
from tests.helpers import COUNTER_WAT

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ACCOUNTS = [f"acct{i:03d}".encode() for i in range(40)]


def workload(coord: Coordinator) -> list[tuple[str, Any]]:
    """Run the workload; return (status, roots of its final record) per execution."""
    token = coord.deploy((EXAMPLES / "token.wat").read_text(), "wasm", name="token",
                         capabilities=["storage", "events"], source_format="wat")
    counter = coord.deploy(COUNTER_WAT, "wasm", name="counter", capabilities=["storage"],
                           source_format="wat")
    requests = [ExecutionRequest(resource_id=token, caller="treasury", entry="mint",
                                 input=struct.pack("<Q", 100 + i) + name)
                for i, name in enumerate(ACCOUNTS)]
    requests += [ExecutionRequest(resource_id=token, caller=ACCOUNTS[i].decode(),
                                  entry="transfer",
                                  input=struct.pack("<Q", 7) + ACCOUNTS[(i * 7 + 3) % 40])
                 for i in range(0, 40, 3)]
    requests.append(ExecutionRequest(resource_id=token, caller="nobody", entry="transfer",
                                     input=struct.pack("<Q", 5) + ACCOUNTS[0]))  # traps
    requests += [ExecutionRequest(resource_id=counter) for _ in range(5)]
    out = []
    for request in requests:
        result = coord.execute(request)
        final = coord.store.execution(result.execution_id)
        assert final is not None
        out.append((result.status.value, {k: final.detail[k]
                                          for k in ("state_root", "global_root")}))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    done = {}
    for name, overrides in (("inline", {}),
                            ("processes", {"coordinator": {"processes": 2, "workers": 2}})):
        data_dir = tmp_path_factory.mktemp(name)
        with Coordinator.open(data_dir=data_dir, overrides=overrides) as coord:
            records = workload(coord)
            token = next(r.id for r in coord.resources() if r.name == "token")
            proofs = [coord.prove(token, b"bal:" + name) for name in ACCOUNTS[:5]]
            proofs.append(coord.prove(token, b"bal:stranger"))
            done[name] = {"records": records, "global": coord.global_root(),
                          "token_root": coord.state_root(token), "proofs": proofs,
                          "verified": coord.store.verify().ok}
        reopened = SqliteStore(data_dir)  # the trees the writer's cache kept, as stored
        done[name]["tree_differences"] = differences(reopened._writer.conn)
        done[name]["stored_global"] = reopened.roots()["global_root"]
        reopened.close()
    return done


def test_processes_commit_to_the_same_roots_as_inline(runs: dict[str, Any]) -> None:
    inline, processes = runs["inline"], runs["processes"]
    assert inline["verified"] and processes["verified"]
    assert [status for status, _ in inline["records"]].count("failed") == 1
    assert inline["records"] == processes["records"]
    assert inline["global"] == processes["global"] != "00" * 32
    assert inline["records"][-1][1]["global_root"] == inline["global"]


def test_roots_change_with_every_state_write(runs: dict[str, Any]) -> None:
    records = runs["inline"]["records"]
    mints = [roots["state_root"] for _, roots in records[:len(ACCOUNTS)]]
    assert len(set(mints)) == len(mints)  # each mint wrote a new balance
    failed = next(i for i, (status, _) in enumerate(records) if status == "failed")
    assert records[failed][1] == records[failed - 1][1]  # the trap changed nothing


def test_proofs_from_both_runs_verify(runs: dict[str, Any]) -> None:
    for run in runs.values():
        for proved in run["proofs"]:
            assert proved["state_root"] == run["token_root"]
            assert verify_proof(proved["proof"], proved["state_root"])
            assert verify_proof(proved["root_proof"], run["global"])
        assert run["proofs"][-1]["value"] is None  # bal:stranger: an exclusion proof
        assert struct.unpack("<Q", bytes.fromhex(run["proofs"][0]["value"]))[0] > 0


def test_the_stored_trees_equal_a_rebuild_from_the_state(runs: dict[str, Any]) -> None:
    for run in runs.values():
        assert run["tree_differences"] == []
        assert run["stored_global"] == run["global"]
