"""The dashboard's store reader: its SQL over the SQLite file and its walk of the in-memory
store's public methods find the same executions for the same filters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_server.dashboard.history import Filters, History
from tests.helpers import ECHO_WAT

CALLERS = ("ann", "ben", "ann", "cat", "ann")


def _run(coord: Coordinator) -> tuple[str, list[str]]:
    rid = coord.deploy(ECHO_WAT, "wasm", source_format="wat", name="echo")
    ids = [coord.execute(ExecutionRequest(resource_id=rid, caller=c, input=c.encode()))
           .execution_id for c in CALLERS]
    starved = coord.execute(ExecutionRequest(resource_id=rid, caller="ben", input=b"x",
                                             fee_limit=1))
    assert starved.error is not None
    return rid, [*ids, starved.execution_id]


@pytest.fixture(params=["sqlite", "memory"])
def opened(request: pytest.FixtureRequest, tmp_path: Path
           ) -> Iterator[tuple[History, str, list[str]]]:
    data_dir = tmp_path if request.param == "sqlite" else ":memory:"
    with Coordinator.open(data_dir=data_dir) as coord:
        rid, ids = _run(coord)
        history = History(coord.store)
        assert (history.path is None) == (request.param == "memory")
        yield history, rid, ids
        history.close()


def test_filters_find_the_same_executions_in_either_store(
        opened: tuple[History, str, list[str]]) -> None:
    history, rid, ids = opened
    every = history.executions(Filters())
    assert [r["execution_id"] for r in every] == ids[::-1]  # newest first
    assert [r["caller"] for r in history.executions(Filters(caller="ann"))] == ["ann"] * 3
    assert len(history.executions(Filters(limit=2))) == 2
    [failed] = history.executions(Filters(status="failed"))
    assert failed["execution_id"] == ids[-1] and failed["error_kind"] == "fee_exhausted"
    assert len(history.executions(Filters(engine="wasmtime"))) == len(every)
    assert history.executions(Filters(resource_ids=())) == []
    assert len(history.executions(Filters(resource_ids=(rid,)))) == len(every)
    assert history.executions(Filters(since=every[0]["timestamp"] + 60)) == []
    assert history.last_errors(["wasmtime"])["wasmtime"]["error_kind"] == "fee_exhausted"


def test_head_and_one_execution_agree_with_the_chain(
        opened: tuple[History, str, list[str]]) -> None:
    history, _rid, ids = opened
    head = history.head()
    report = history.store.verify()
    assert head == {"length": report.count, "head": report.head}
    record = history.record(ids[0])
    assert record is not None and len(record["leaf_hash"]) == 64
    assert history.children(ids[0], record["seq"]) == []
    assert history.record("ex-unknown") is None
