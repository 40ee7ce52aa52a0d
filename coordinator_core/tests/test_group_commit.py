"""``GroupCommitter``: single jobs (``submit``) and whole reads of a worker's pipe
(``submit_all``) from many threads at once. Every job is committed exactly once, in a group
of at most ``max_batch``, gets its own result, and nobody waits forever, also when a group's
commit fails."""

from __future__ import annotations

import threading
import time
from typing import Any

from coordinator_core.store.groupcommit import GroupCommitter, Job


class Writer:
    """The collaborator: records each group and answers every job with its own payload."""

    def __init__(self, fail_every: int = 0) -> None:
        self.groups: list[list[Any]] = []
        self.lock = threading.Lock()
        self.fail_every = fail_every
        self.active = 0

    def commit_batch(self, jobs: list[Job]) -> None:
        with self.lock:
            self.active += 1
            assert self.active == 1, "two groups committed at once"
            self.groups.append([job.run for job in jobs])
            number = len(self.groups)
        time.sleep(0.0005)  # a transaction takes a while: callers pile up meanwhile
        with self.lock:
            self.active -= 1
        if self.fail_every and number % self.fail_every == 0:
            raise OSError("disk full")
        for job in jobs:
            job.result = ("done", job.run)


def test_submit_and_submit_all_from_many_threads(max_batch: int = 8) -> None:
    writer = Writer()
    committer = GroupCommitter(writer.commit_batch, max_batch=max_batch)
    results: dict[Any, Any] = {}
    lock = threading.Lock()

    def single(thread: int) -> None:
        for i in range(50):
            tag = ("one", thread, i)
            got = committer.submit(Job(tag))  # type: ignore[arg-type]
            with lock:
                results[tag] = got

    def batches(thread: int) -> None:
        for i in range(20):
            jobs = [Job(("all", thread, i, k)) for k in range(i % 13 + 1)]  # type: ignore[arg-type]
            committer.submit_all(jobs)
            with lock:
                for job in jobs:
                    results[job.run] = job.result

    threads = [threading.Thread(target=single, args=(t,)) for t in range(4)]
    threads += [threading.Thread(target=batches, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a caller is still waiting"
    committed = [tag for group in writer.groups for tag in group]
    assert len(committed) == len(set(committed)) == len(results) == 4 * 50 + 4 * sum(
        i % 13 + 1 for i in range(20))
    assert all(results[tag] == ("done", tag) for tag in committed)
    assert max(len(group) for group in writer.groups) <= max_batch
    assert committer.jobs == len(committed) and committer.groups == len(writer.groups)


def test_a_failing_group_fails_its_jobs_and_the_next_groups_commit() -> None:
    writer = Writer(fail_every=3)
    committer = GroupCommitter(writer.commit_batch, max_batch=4)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def batches(thread: int) -> None:
        for i in range(15):
            jobs = [Job((thread, i, k)) for k in range(6)]  # type: ignore[arg-type]
            committer.submit_all(jobs)  # never raises: each job holds its outcome
            with lock:
                outcomes.extend(jobs)

    threads = [threading.Thread(target=batches, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a caller is still waiting"
    failed = [job for job in outcomes if job.error is not None]
    done = [job for job in outcomes if job.error is None]
    assert failed and done and len(outcomes) == 3 * 15 * 6
    assert all("group commit failed" in str(job.error) for job in failed)
    assert all(job.result == ("done", job.run) for job in done)
