"""State roots: what keeping the sparse Merkle trees costs per state write, and that the cost
grows with log n, not n.

Two SQLite stores are filled, one with 1,000 keys and one with 100,000 (in executions of
1,000 writes each, through ``Store.finish`` like any commit). Then, interleaved round by
round so machine noise hits both alike:

- ``commit``: ``finish`` of an execution writing one new key (state row, tree update of the
  resource and of the global tree, the sealed record with its roots, COMMIT);
- ``tree``: the tree update alone (``merkle.apply_writes`` for one key in a transaction that
  is rolled back), the part that depends on the number of keys.

The ratio of the 100,000-key time to the 1,000-key time is compared with the ratio of the
tree depths (log2 100,000 / log2 1,000 ~ 1.67): a rescan would be ~100x.

Then what the trees add to a commit, on the 100,000-key store, with a switch on the writer
so all variants run side by side in one process: a one-key ``finish`` and a group of 64
one-key executions (``finish_many``, one transaction) with the trees off (the record sealed
without roots, as before state roots existed), with the trees read from the table at every
update (the writer without its node cache, ``merkle_cache.py``), and as shipped (cached).
"""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Table, interleaved, paired_ratio
from coordinator_core.store import BoundProcessor, SqliteStore
from coordinator_core.store.merkle import apply_writes
from coordinator_core.store.merkle_cache import CachedNodes
from coordinator_core.store.merkle_sqlite import SqliteNodes
from coordinator_core.store.schema import connect
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import AuditRecord, Effect

SECTION = "state_roots"
RID = "ab" * 32
PROCESSORS = (BoundProcessor("state", StateProcessor(), KINDS),)
SIZES = (1_000, 100_000)
FILL_BATCH = 1_000
GROUP = 64

READING = """
#### Reading the state_roots rows

`commit per write` is a whole `finish` writing one new key; `tree update per write` is the
part of it that walks and rewrites the two trees (the resource's and the global one). Their
100k/1k ratios should sit near the depth ratio (log2 n), far from the 100x a rescan would
cost; the mean proof depth row shows the depths the trees really have.

The `trees off / uncached / cached` rows are the same commit with the writer's state trees
switched off, read from the table at every update, and served by the writer's node cache;
`state roots' share` is (cached - off) / cached, what the roots cost of a state-writing
commit. Measured on the shared 2-core VM under load ~2 (100,000 keys): one-key commit ~70-85
us off, ~625-710 us uncached, ~415-490 us cached; group of 64, per execution, ~54 / ~750-880 /
~480 us. The share stays ~80-90%: the path rows rewritten per write (each on its own page of
the commit) and the hashing, not the reads, are what is left (docs/storage.md, "State roots").
"""


class _Uncached:
    """The writer's node source with every read going to the table (writes still reach the
    cache, so switching back finds it right)."""

    def __init__(self, cache: CachedNodes) -> None:
        self.cache = cache

    def fetch(self, tree: str, positions: list[str]) -> Any:
        return self.cache.table.fetch(tree, positions)

    def cheap(self, tree: str) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cache, name)


class _Switch:
    """Sets the writer of ``store`` to one variant before each timed call."""

    def __init__(self, store: SqliteStore) -> None:
        self.writer = store._writer
        self.cache = self.writer.nodes
        self.uncached = _Uncached(self.cache)
        self.sealing = self.writer.with_roots

    def set(self, variant: str) -> None:
        writer = self.writer
        writer.nodes = self.uncached if variant == "uncached" else self.cache  # type: ignore[assignment]
        if variant == "off":
            writer.with_roots = self._without_roots  # type: ignore[method-assign]
        else:
            writer.__dict__.pop("with_roots", None)

    def _without_roots(self, record: AuditRecord, known: Any = None) -> AuditRecord:
        self.writer.tree_writes = {}
        return record



def _record(execution_id: str) -> AuditRecord:
    return AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                       execution_id=execution_id, caller="bench", resource_id=RID,
                       status="succeeded")


def _filled(path: Path, size: int) -> SqliteStore:
    store = SqliteStore(path)
    for start in range(0, size, FILL_BATCH):
        effects = [Effect("state.set", RID, b"key-%d" % i, b"value-%d" % i)
                   for i in range(start, min(size, start + FILL_BATCH))]
        store.finish(_record(f"fill-{start}"), effects, PROCESSORS)
    return store


def _depth(store: SqliteStore, probes: int = 200) -> float:
    return statistics.mean(len(store.prove(RID, b"probe-%d" % i)["proof"]["siblings"])
                           for i in range(probes))


def run(table: Table, n: int = 600, rounds: int = 6) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stores = {size: _filled(Path(tmp) / str(size), size) for size in SIZES}
        counter = itertools.count()
        conns = {size: connect(store.path, durability="normal", busy_timeout=5.0,
                               readonly=False) for size, store in stores.items()}

        def commit(store: SqliteStore) -> Any:
            def one() -> None:
                n = next(counter)
                store.finish(_record(f"e{n}"), [Effect("state.set", RID, b"new-%d" % n, b"v")],
                             PROCESSORS)
            return one

        def tree(conn: Any) -> Any:
            nodes = SqliteNodes(conn)

            def one() -> None:
                n = next(counter)
                conn.execute("BEGIN")
                apply_writes(nodes, {RID: {b"tree-%d" % n: b"v"}})
                conn.execute("ROLLBACK")
            return one

        fns = {**{f"commit {size}": commit(store) for size, store in stores.items()},
               **{f"tree {size}": tree(conn) for size, conn in conns.items()}}
        medians: dict[str, list[float]] = {}
        samples = interleaved(fns, n, rounds=rounds, warmup=20, round_medians=medians)
        depths = {size: _depth(store) for size, store in stores.items()}
        for conn in conns.values():
            conn.close()
        for store in stores.values():
            store.close()
    small, large = SIZES
    log_ratio = math.log2(large) / math.log2(small)
    for what, label in (("commit", "commit per write"), ("tree", "tree update per write")):
        for size in SIZES:
            table.add(SECTION, f"{label}, {size:,} keys",
                      statistics.median(samples[f"{what} {size}"]) * 1e6, "us")
        ratio = paired_ratio(medians[f"{what} {large}"], medians[f"{what} {small}"])
        table.add(SECTION, f"{label}: {large:,} / {small:,} keys", ratio, "x",
                  target=f"<= {2 * log_ratio:.1f}", ok=ratio <= 2 * log_ratio,
                  note=f"log2 ratio {log_ratio:.2f}; a rescan would be {large // small}x")
    for size in SIZES:
        table.add(SECTION, f"mean proof depth, {size:,} keys", depths[size], "levels",
                  note=f"log2 n = {math.log2(size):.1f}")
    run_share(table)


VARIANTS = ("off", "uncached", "cached")


def run_share(table: Table, n: int = 600, groups: int = 60, rounds: int = 6) -> None:
    """The commit with the trees off, uncached and cached, side by side."""
    large = SIZES[-1]
    with tempfile.TemporaryDirectory() as tmp:
        store = _filled(Path(tmp) / "share", large)
        switch = _Switch(store)
        counter = itertools.count()

        def one(variant: str) -> Any:
            def call() -> None:
                switch.set(variant)
                k = next(counter)
                store.finish(_record(f"s{k}"), [Effect("state.set", RID, b"s-%d" % k, b"v")],
                             PROCESSORS)
            return call

        def group(variant: str) -> Any:
            def call() -> None:
                switch.set(variant)
                items = []
                for _ in range(GROUP):
                    k = next(counter)
                    items.append((_record(f"g{k}"),
                                  [Effect("state.set", RID, b"g-%d" % k, b"v")], ()))
                for outcome, _ in store.finish_many(items, PROCESSORS):
                    if isinstance(outcome, Exception):
                        raise outcome
            return call

        medians: dict[str, list[float]] = {}
        ones = interleaved({v: one(v) for v in VARIANTS}, n, rounds=rounds, warmup=20,
                           round_medians=medians)
        group_medians: dict[str, list[float]] = {}
        many = interleaved({v: group(v) for v in VARIANTS}, groups, rounds=rounds, warmup=3,
                           round_medians=group_medians)
        switch.set("cached")
        store.close()
    for label, samples, rounds_of, per in (("one-key commit", ones, medians, 1),
                                           (f"group of {GROUP}, per execution", many,
                                            group_medians, GROUP)):
        for variant in VARIANTS:
            table.add(SECTION, f"{label}, {large:,} keys, trees {variant}",
                      statistics.median(samples[variant]) * 1e6 / per, "us")
        share = statistics.median(
            (c - o) / c for c, o in zip(rounds_of["cached"], rounds_of["off"], strict=True))
        table.add(SECTION, f"{label}: state roots' share", share * 100, "%",
                  target="<= 20", ok=share <= 0.20,
                  note="(cached - off) / cached, per round")
        before = paired_ratio(rounds_of["uncached"], rounds_of["cached"])
        table.add(SECTION, f"{label}: uncached / cached", before, "x")

