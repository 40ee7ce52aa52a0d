"""``coordinator replay``: re-execute a data directory's log into a fresh one and compare.

:func:`replay` checks everything it can before writing anything (the source's audit chain
verifies, every execution to re-run has its request kept, the destination is new), then
walks the log (``runner.py``). See docs/replay.md for what is compared and why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from coordinator_core.replay.runner import Replay, Report, check_fresh
from coordinator_core.replay.source import Source
from coordinator_hookspecs import InvalidRequest

#: Quota decisions depend on the clock: they are not re-decided (docs/replay.md).
OVERRIDES: dict[str, Any] = {"coordinator": {"enable_quota_management": False}}


def replay(source: str | os.PathLike[str], into: str | os.PathLike[str], *,
           config_path: str | os.PathLike[str] | None = None,
           until: int | None = None) -> Report:
    """Replay the log of ``source`` (up to ``until``) into the new directory ``into``, with
    the config at ``config_path``. Raises ``InvalidRequest`` or ``NotFound`` (nothing
    written) when the replay cannot start; a divergence is in the returned report."""
    from coordinator_core.coordination.coordinator import Coordinator

    src, dst = Path(source), Path(into)
    if until is not None and (type(until) is not int or until < 1):
        raise InvalidRequest(f"--until must be a positive record number, got {until!r}")
    check_fresh(dst, src)
    origin = Source(src)
    try:
        count = origin.verify()
        missing = origin.missing_request(until)
        if missing is not None:
            raise InvalidRequest(
                f"record {missing.seq} (execution {missing.execution_id}) has no kept request: "
                "it was written with [store] keep_requests = false (or by a coordinator "
                "without it), so the log cannot be replayed")
        report = Report(source=str(src), into=str(dst))
        if until is not None and until > count:
            report.notes.append(f"--until {until} is past the last record ({count})")
        with Coordinator.open(config_path, data_dir=dst, overrides=OVERRIDES) as coord:
            return Replay(origin, coord, report).run(until)
    finally:
        origin.close()


__all__ = ["Report", "replay"]
