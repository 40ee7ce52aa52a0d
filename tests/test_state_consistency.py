"""Concurrent executions of one stateful contract never lose an update.

Engines read committed state and return absolute writes; the pipeline serialises executions
of a resource holding a state capability from their first read to their commit.
"""

from __future__ import annotations

from pathlib import Path

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.testing import start_together
from tests.helpers import COUNTER_WAT


def _count(coord: Coordinator, rid: str) -> int:
    value = coord.state(rid, b"count")
    return int.from_bytes(value, "little") if value else 0


def test_parallel_increments_are_all_kept(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path, overrides={"coordinator": {"workers": 4}}) as coord:
        rid = coord.deploy(COUNTER_WAT, "wasm", source_format="wat", capabilities=["storage"])
        handles = [coord.submit(ExecutionRequest(resource_id=rid, caller=f"c{i % 4}"))
                   for i in range(400)]
        results = [h.result(timeout=30) for h in handles]
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
        assert _count(coord, rid) == 400


def test_stateless_contracts_are_not_serialised(tmp_path: Path) -> None:
    from tests.helpers import ECHO_WAT

    with Coordinator.open(data_dir=tmp_path) as coord:
        rid = coord.deploy(ECHO_WAT, "wasm", source_format="wat")
        coord.execute(ExecutionRequest(resource_id=rid, input=b"x"))
        assert "lock" not in coord.metrics()["stages"]
        counter = coord.deploy(COUNTER_WAT, "wasm", source_format="wat", capabilities=["storage"])
        coord.execute(ExecutionRequest(resource_id=counter))
        assert coord.metrics()["stages"]["lock"]["count"] == 1


CHILD = """
import sys
from coordinator_core import Coordinator, ExecutionRequest
with Coordinator.open(data_dir=sys.argv[1], overrides={"coordinator": {"workers": 2}}) as coord:
    rid = coord.deploy(sys.argv[2], "wasm", source_format="wat", capabilities=["storage"])
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    handles = [coord.submit(ExecutionRequest(resource_id=rid)) for _ in range(int(sys.argv[3]))]
    assert all(h.result(timeout=60).ok for h in handles)
"""


def test_two_processes_on_one_data_dir_keep_every_increment(tmp_path: Path) -> None:
    """The state lock also holds across processes (a service and a CLI on one data dir)."""
    import sys

    children = start_together([[sys.executable, "-c", CHILD, str(tmp_path), COUNTER_WAT,
                                "150"]] * 2)
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
    with Coordinator.open(data_dir=tmp_path) as coord:
        rid = coord.deploy(COUNTER_WAT, "wasm", source_format="wat", capabilities=["storage"])
        assert _count(coord, rid) == 300
