"""Group commit by leader/follower: many finishing executions share one transaction.

A caller that finds no commit in progress becomes the leader and commits its own job at once,
on its own thread: the uncontended path has no cross-thread handoff (a handoff costs tens of
microseconds). Callers arriving while a commit runs queue up and sleep on a private lock. When
the leader's transaction is durable it wakes the jobs it committed and promotes the oldest
queued caller to leader, which commits everything queued meanwhile (up to ``max_batch``) as
the next group. So batches grow exactly when commits are the bottleneck (fsync in ``full``
durability), and every caller returns only after its own records are committed.

``commit_delay`` (PostgreSQL's ``commit_delay`` idea, off by default): when the previous
group held more than one job, i.e. executions are finishing concurrently, a new leader first
sleeps that long so the executions finishing right now join its group. It trades that much
latency for fewer transactions; alone, a caller never waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from coordinator_hookspecs import InternalError


class Job:
    """One unit of work for the writer: ``run(writer)`` executes inside the group's
    transaction; ``result``/``error`` are read by the submitting thread after commit.

    A job given ``records`` instead of ``run`` only appends these ``(record, digest)`` pairs
    to the audit log: the writer appends them one by one, or, for a group made only of such
    jobs, as one multi-row INSERT."""

    __slots__ = ("_promoted", "_waiter", "error", "records", "result", "run", "single")

    def __init__(self, run: Callable[[Any], Any] | None = None, single: bool = False,
                 records: tuple[tuple[Any, str | None], ...] | None = None) -> None:
        self.run = run
        self.records = records
        #: the job executes exactly one statement, atomic by itself: alone in its group it
        #: may skip BEGIN/COMMIT.
        self.single = single if records is None else len(records) == 1
        self.result: Any = None
        self.error: BaseException | None = None
        self._waiter: Any = None
        self._promoted = False


class GroupCommitter:
    """Serialises writers into groups. ``commit_batch(jobs)`` runs the jobs in one
    transaction and must set each job's result or error; it is only ever called by one thread
    at a time, so the writer connection and the chain head need no further locking."""

    def __init__(self, commit_batch: Callable[[list[Job]], None], max_batch: int = 256,
                 commit_delay: float = 0.0) -> None:
        self._commit_batch = commit_batch
        self._max_batch = max(1, max_batch)
        self._delay = commit_delay
        self._contended = False
        self._lock = threading.Lock()
        self._queue: list[Job] = []
        self._busy = False
        self.groups = 0
        self.jobs = 0

    def submit(self, job: Job) -> Any:
        """Run ``job`` in the next group; return its result or raise its error."""
        with self._lock:
            if self._busy:
                job._waiter = waiter = threading.Lock()
                waiter.acquire()
                self._queue.append(job)
                leader = False
            else:
                self._busy = True
                leader = True
        if leader:
            batch = [job]
            if self._delay and self._contended:
                time.sleep(self._delay)
                with self._lock:
                    batch.extend(self._take(self._max_batch - 1))
            self._lead(batch)
        else:
            job._waiter.acquire()  # released when our group committed, or to promote us
            if job._promoted:
                self._lead(None)
        if job.error is not None:
            raise job.error
        return job.result

    def submit_all(self, jobs: list[Job]) -> None:
        """Commit ``jobs`` in the next group(s), in order, and return when all of them are
        committed; each job gets its own result or error, none is raised (the coordinator's
        writer commits what a worker process sent in one read this way)."""
        if not jobs:
            return
        with self._lock:
            leader = not self._busy
            self._busy = True
            waiting = jobs[self._max_batch:] if leader else jobs
            for job in waiting:
                job._waiter = waiter = threading.Lock()
                waiter.acquire()
            self._queue.extend(waiting)
        if leader:
            self._lead_quietly(jobs[:self._max_batch])
        for job in waiting:
            job._waiter.acquire()
            if job._promoted:
                self._lead_quietly(None)

    def _lead_quietly(self, batch: list[Job] | None) -> None:
        try:
            self._lead(batch)
        except Exception:  # every job of the group has its error already
            pass

    def try_alone(self) -> bool:
        """Become the leader at once, without a ``Job``, if no commit is in progress (the
        uncontended case): the caller then runs its transaction on the writer itself and
        must call ``end_alone`` after it, whatever happened. False when it must ``submit``:
        a commit is in progress, or ``commit_delay`` asks the next leader to gather."""
        with self._lock:
            if self._busy or (self._delay and self._contended):
                return False
            self._busy = True
            return True

    def end_alone(self, committed: bool = True) -> None:
        """End a ``try_alone`` leadership: the writer goes to the oldest caller that queued
        meanwhile, or is free again. ``committed``: a transaction was committed (counted)."""
        self._contended = False
        if committed:
            self.groups += 1
            self.jobs += 1
        self._hand_over()

    def _take(self, limit: int) -> list[Job]:
        batch = self._queue[:limit]
        del self._queue[:limit]
        return batch

    def _lead(self, batch: list[Job] | None) -> None:
        if batch is None:
            with self._lock:
                batch = self._take(self._max_batch)
        self._contended = len(batch) > 1
        try:
            self._commit_batch(batch)
        except BaseException as exc:  # a writer bug must not strand the followers
            for job in batch:
                if job.error is None:
                    job.error = InternalError(f"group commit failed: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.groups += 1
            self.jobs += len(batch)
            self._hand_over()
            for job in batch:
                if job._waiter is not None and not job._promoted:
                    job._waiter.release()

    def _hand_over(self) -> None:
        """Promote the oldest queued caller to leader, or mark the writer free."""
        with self._lock:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._busy = False
            else:
                successor._promoted = True
        if successor is not None:
            successor._waiter.release()
