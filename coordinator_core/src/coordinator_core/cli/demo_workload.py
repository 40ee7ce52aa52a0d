"""The demo's world and workload: deploy the examples, fund accounts, plan and run executions.

A helper of ``coordinator demo`` (``cli/demo.py``). The plan is deterministic for a seed: a
mix of *scenarios*, each with the outcomes it may end in, so the run can check itself (every
outcome expected, every expected outcome seen). Rare scenarios get a minimum count, and the
rate-limited caller sends bursts, so a small run still shows every kind of outcome.
"""

from __future__ import annotations

import random
import struct
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from coordinator_hookspecs import AccessPolicy, ExecutionRequest, ExecutionResult, SecurityRejected

TREASURY = "treasury"
FRIENDS = ("alice", "bob", "carol")
#: Config the demo runs with. Quota: dave may run 5 executions a second (burst 2), refused
#: beyond. The workers run in parallel; the core serialises executions of a contract holding
#: ``storage`` from read to commit, and the demo checks its balances add up to the supply.
OVERRIDES: dict[str, Any] = {
    "quota-rate": {"callers": {"dave": {"rate": 5.0, "burst": 2, "mode": "reject"}}},
}
TOKEN_GRANTS = ("storage", "events")
HYBRID_GRANTS = ("storage", "events", "models")
WINDOW = 64  # executions in flight at once: keeps submit() ahead of the workers


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


@attrs.frozen
class Item:
    """One planned execution: its scenario, the request, and the outcomes it may end in."""

    scenario: str
    request: ExecutionRequest
    expected: frozenset[str]


@attrs.define
class World:
    """The deployed resources and the checks made while setting them up."""

    token: str
    hybrid: str
    model: str
    minted: int
    refused_without_models: str | None  # the refusal message, None if it was not refused


def setup(coord: Any, examples: Path) -> World:
    """Deploy the token, the hybrid contract (once without ``models``: refused) and the
    model; configure and fund them; warm the model's session."""
    deny = AccessPolicy(deny=frozenset({"mallory"}))
    token = coord.deploy((examples / "token.wat").read_text(), "wasm", name="token",
                         capabilities=TOKEN_GRANTS, owner=TREASURY, policy=deny,
                         source_format="wat")
    hybrid_text = (examples / "hybrid.wat").read_text()
    refused = None
    try:
        coord.deploy(hybrid_text, "wasm", name="hybrid-ungranted", capabilities=TOKEN_GRANTS,
                     owner=TREASURY, source_format="wat")
    except SecurityRejected as exc:
        refused = exc.message
    hybrid = coord.deploy(hybrid_text, "wasm", name="hybrid", capabilities=HYBRID_GRANTS,
                          owner=TREASURY, policy=deny, source_format="wat")
    model = coord.deploy(
        (examples / "risk_model.onnx").read_bytes(), "onnx", name="risk-model",
        owner="risk-team", policy=AccessPolicy(
            public=False, allow=frozenset({*FRIENDS, "dave", "contract:" + hybrid})))
    minted = 0

    def must(rid: str, entry: str, data: bytes) -> None:
        result = coord.execute(ExecutionRequest(resource_id=rid, caller=TREASURY, entry=entry,
                                                input=data))
        if not result.ok:
            raise RuntimeError(f"demo setup: {entry} on {rid[:12]} failed: {result.error}")

    must(hybrid, "configure", model.encode())
    for name in (*FRIENDS, "dave"):
        must(token, "mint", u64(1_000_000) + name.encode())
        minted += 1_000_000
    for name in FRIENDS:
        must(hybrid, "mint", u64(100_000) + name.encode())
    coord.execute(score_request(model, "risk-team", 10, 1000))  # load the session
    return World(token, hybrid, model, minted, refused)


def score_request(model: str, caller: str, amount: int, balance: int) -> ExecutionRequest:
    features = [[amount / 1000, amount / (balance + 1), 0.0]]
    return ExecutionRequest(resource_id=model, caller=caller, input={"x": features})


def plan(world: World, n: int, seed: int) -> list[Item]:
    """``n`` executions in a seeded random order (see the module docstring)."""
    rng = random.Random(seed)
    ok = frozenset({"succeeded"})
    units: list[list[Item]] = []

    def add(count: int, make: Callable[[int], Item]) -> None:
        units.extend([make(i)] for i in range(count))

    def transfer(rid: str, caller: str, amount: int, to: str, **kw: Any) -> ExecutionRequest:
        return ExecutionRequest(resource_id=rid, caller=caller, entry="transfer",
                                input=u64(amount) + to.encode(), **kw)

    def pair() -> tuple[str, str]:
        a, b = rng.sample(FRIENDS, 2)
        return a, b

    def hybrid(i: int) -> Item:
        a, b = pair()
        big = i % 5 == 0  # most of the sender's balance at once: the model refuses
        amount = rng.randint(60_000, 95_000) if big else rng.randint(1, 500)
        return Item("hybrid transfer", transfer(world.hybrid, a, amount, b),
                    frozenset({"denied by model" if big else "approved"}))

    def score(_i: int) -> Item:
        return Item("risk score", score_request(world.model, rng.choice(FRIENDS),
                                                rng.randint(1, 90_000), 100_000), ok)

    counts = {
        "hybrid": max(10, n * 25 // 100), "score": max(5, n * 12 // 100),
        "mallory": max(3, n * 4 // 100), "erin": max(3, n * 3 // 100),
        "fee": max(3, n * 4 // 100), "overdraft": max(2, n * 2 // 100),
        "dave": max(2, n * 6 // 500),
    }
    add(counts["hybrid"], hybrid)
    add(counts["score"], score)
    add(counts["mallory"], lambda _i: Item("denied caller", transfer(
        world.token, "mallory", 5, "alice"), frozenset({"security_rejected"})))
    add(counts["erin"], lambda _i: Item("caller not admitted by the model", transfer(
        world.hybrid, "erin", 5, "alice"), frozenset({"trap"})))
    add(counts["fee"], lambda _i: Item("fee limit too low", transfer(
        world.token, rng.choice(FRIENDS), 5, "bob", fee_limit=500),
        frozenset({"fee_exhausted"})))
    add(counts["overdraft"], lambda _i: Item("overdraft", transfer(
        world.token, "bob", 10**12, "carol"), frozenset({"trap"})))
    for _ in range(counts["dave"]):  # bursts of five: the rate limit refuses some of each
        units.append([Item("rate-limited caller", transfer(world.token, "dave", 1, "alice"),
                           frozenset({"succeeded", "quota_exceeded"})) for _ in range(5)])
    used = sum(len(u) for u in units)
    for _ in range(max(0, n - used)):
        a, b = pair()
        units.append([Item("token transfer", transfer(world.token, a, rng.randint(1, 100), b),
                           ok)])
    rng.shuffle(units)
    return [item for unit in units for item in unit]


def outcome(result: ExecutionResult) -> str:
    """The label a result is tallied under: status, error kind, or the hybrid verdict."""
    if result.ok:
        if result.output == b"approved":
            return "approved"
        if result.output == b"denied":
            return "denied by model"
        return "succeeded"
    return result.error.kind.value if result.error is not None else result.status.value


@attrs.define
class Tally:
    """What the workload produced, by scenario and by status."""

    scenarios: dict[str, Counter[str]] = attrs.field(factory=dict)
    unexpected: dict[str, Counter[str]] = attrs.field(factory=dict)
    statuses: Counter[str] = attrs.field(factory=Counter)
    error_kinds: Counter[str] = attrs.field(factory=Counter)
    fee_used: int = 0
    executions: int = 0
    seconds: float = 0.0
    cancelled_id: str | None = None

    def add(self, item: Item, result: ExecutionResult) -> None:
        label = outcome(result)
        self.scenarios.setdefault(item.scenario, Counter())[label] += 1
        if label not in item.expected:
            self.unexpected.setdefault(item.scenario, Counter())[label] += 1
        self.statuses[result.status.value] += 1
        if result.error is not None:
            self.error_kinds[result.error.kind.value] += 1
        self.fee_used += result.fee_used
        self.executions += 1


def run(coord: Any, world: World, items: list[Item], progress: Any) -> Tally:
    """Submit every item (at most ``WINDOW`` in flight), plus one long execution in the
    middle that is cancelled once it runs; tally the results as they come back."""
    tally = Tally()
    inflight: deque[tuple[Item, Any]] = deque()
    cancel_at = len(items) // 2
    started = time.perf_counter()

    def finish_one() -> None:
        item, handle = inflight.popleft()
        tally.add(item, handle.result())
        progress.update(tally.executions)

    for index, item in enumerate(items):
        if index == cancel_at:
            inflight.append(_cancelled(coord, world, tally))
        inflight.append((item, coord.submit(item.request)))
        while len(inflight) >= WINDOW:
            finish_one()
    while inflight:
        finish_one()
    tally.seconds = time.perf_counter() - started
    progress.finish(tally.executions)
    return tally


def _cancelled(coord: Any, world: World, tally: Tally) -> tuple[Item, Any]:
    """Submit ``spin`` (runs until stopped), wait until it runs, cancel it."""
    item = Item("cancelled", ExecutionRequest(
        resource_id=world.token, caller="carol", entry="spin", fee_limit=10**11, timeout=20.0),
        frozenset({"cancelled"}))
    handle = coord.submit(item.request)
    tally.cancelled_id = handle.execution_id
    until = time.monotonic() + 10.0
    while coord.status(handle.execution_id).status.value == "queued" and \
            time.monotonic() < until:
        time.sleep(0.001)
    coord.cancel(handle.execution_id)
    return item, handle
