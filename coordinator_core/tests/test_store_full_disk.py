"""A full disk in the middle of a group commit (found in review): SQLite rolls the whole
group back, and nothing may then be written piecemeal outside a transaction. Every execution
still ends with one final record (failed), no state, and the chain verifies."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from coordinator_core import Coordinator, ExecutionRequest, ExecutionResult, Status
from coordinator_core.testing import EchoPlugin


def test_full_disk_in_a_group_fails_it_cleanly(tmp_path: Path) -> None:
    coord = Coordinator.open(data_dir=tmp_path, plugins=[EchoPlugin()], entry_points=False)
    try:
        rids = [coord.deploy(name, "echo") for name in (b"one", b"two", b"three")]
        assert coord.execute(ExecutionRequest(resource_id=rids[0], entry="write",
                                              input=b"warm")).ok
        writer = coord.store._writer.conn  # type: ignore[attr-defined]
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        writer.execute(f"PRAGMA max_page_count = {pages + 8}")  # a nearly full disk
        results: dict[str, ExecutionResult] = {}

        def run(name: str, rid: str, data: bytes) -> None:
            results[name] = coord.execute(ExecutionRequest(
                resource_id=rid, caller=name, entry="write", input=data, fee_limit=10**9))

        # Hold the group-commit leader so that the three executions share the next group.
        hold = threading.Thread(target=lambda: coord.store._write(  # type: ignore[attr-defined]
            lambda _w: time.sleep(0.5), single=True))
        hold.start()
        time.sleep(0.05)
        threads = [threading.Thread(target=run, args=args) for args in (
            ("a", rids[0], b"small"), ("b", rids[1], b"x" * 300_000), ("c", rids[2], b"c"))]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in (hold, *threads):
            thread.join(10)
        writer.execute("PRAGMA max_page_count = 1000000")
        assert results["b"].status is Status.FAILED  # its 300 KB did not fit
        cases = (("a", rids[0], b"small"), ("b", rids[1], b""), ("c", rids[2], b"c"))
        for name, rid, data in cases:
            result = results[name]
            finals = [r for r in coord.store.audit_records()
                      if r.execution_id == result.execution_id and r.record_kind == "execution"]
            assert [r.status for r in finals] == [result.status.value]
            # state is there exactly when the execution says it succeeded (the others shared
            # b's group, normally, and failed with it)
            expected = data if result.ok else (b"warm" if name == "a" else None)
            assert coord.state(rid, b"last") == expected
        assert coord.store.verify().ok
        assert coord.execute(ExecutionRequest(resource_id=rids[0], entry="write",
                                              input=b"later")).ok
        assert coord.store.verify().ok
    finally:
        coord.close()
