"""An access policy changed by another process (the CLI beside a running service) takes
effect in the running coordinator within its recheck interval, cached verdicts included."""

from __future__ import annotations

import time
from pathlib import Path

from coordinator_core import Coordinator, ExecutionRequest, Status
from coordinator_core.execution.pipeline import RESOURCES_RECHECK
from tests.helpers import ECHO_WAT, run_cli


def test_a_deny_set_from_the_cli_reaches_a_running_coordinator(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path) as coord:
        rid = coord.deploy(ECHO_WAT, "wasm", owner="alice", source_format="wat")
        request = ExecutionRequest(resource_id=rid, caller="bob", input=b"hi")
        for _ in range(3):  # admitted, and the verdict is cached
            assert coord.execute(request).ok
        done = run_cli("policy", rid, "--deny", "bob", "--caller", "alice", data_dir=tmp_path)
        assert done.returncode == 0, done.stderr
        time.sleep(RESOURCES_RECHECK * 2)
        refused = coord.execute(request)
        assert refused.status is Status.REJECTED and refused.error is not None
        assert refused.error.kind.value == "security_rejected"
        assert coord.resource(rid).policy.deny == frozenset({"bob"})
        assert coord.execute(ExecutionRequest(resource_id=rid, caller="carol",
                                              input=b"hi")).ok


def test_only_a_change_of_an_existing_resource_bumps_the_version(tmp_path: Path) -> None:
    """A new deploy makes no cache stale: it must not make every process drop its caches."""
    with Coordinator.open(data_dir=tmp_path) as coord:
        before = coord.store.resources_version()
        rid = coord.deploy(ECHO_WAT, "wasm", owner="alice", source_format="wat")
        assert coord.store.resources_version() == before
        coord.set_policy(rid, coord.resource(rid).policy, caller="alice")
        assert coord.store.resources_version() == before + 1
