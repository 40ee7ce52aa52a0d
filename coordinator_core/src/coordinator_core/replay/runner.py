"""Re-execute a data directory's audit log into a fresh one and compare, record by record.

The walk follows the source log in ``seq`` order: a ``deploy`` deploys the stored code with
what it was granted, a ``security`` record of a policy change sets that policy, and a
top-level ``execution`` runs its kept request again (or, when its outcome was decided by the
clock, is written as recorded). Each re-run is compared with its source record on status,
error kind, fee, effect digest, output digest and the state roots the record holds; the walk
stops at the first difference. Nested executions are not walked: their parent re-runs them,
and their fees and effects are part of the parent's. See docs/replay.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from coordinator_core.replay.source import Source, recorded_only, top_level
from coordinator_core.store.requests import RequestRef, request_of, versions
from coordinator_hookspecs import AccessPolicy, AuditRecord, CoordinatorError, InvalidRequest

#: Record fields compared, then ``detail`` keys compared whenever either record has them.
FIELDS = ("status", "error_kind", "fee_used", "effect_digest")
DETAIL_KEYS = ("output", "state_root", "global_root")
LOOSE_FIELDS = ("status", "error_kind")


@attrs.define
class Report:
    """What a replay did: counts, and the first divergence (None when all were identical)."""

    source: str
    into: str
    records: int = 0
    replayed: int = 0
    #: re-run executions marked ``nondeterministic``, compared on status only
    nondeterministic: int = 0
    recorded: int = 0
    deploys: int = 0
    policies: int = 0
    identical_through: int = 0
    divergence: dict[str, Any] | None = None
    notes: list[str] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return self.divergence is None


def check_fresh(into: Path, source: Path) -> None:
    """Refuse a destination that exists with anything in it (or is the source)."""
    if into.resolve() == source.resolve():
        raise InvalidRequest("--into must be a new directory, not the source data directory")
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise InvalidRequest(f"--into {into} is not empty: a replay writes a fresh data "
                             "directory and never into an existing one")


def differences(source: AuditRecord, replayed: AuditRecord) -> dict[str, dict[str, Any]]:
    """The compared fields in which the two final records differ. An execution its engine
    marked ``nondeterministic`` (in either run) is compared on status and error kind only."""
    found = {}
    loose = bool(source.detail.get("nondeterministic") or
                 replayed.detail.get("nondeterministic"))
    for name in LOOSE_FIELDS if loose else FIELDS:
        a, b = getattr(source, name), getattr(replayed, name)
        if a != b:
            found[name] = {"source": a, "replay": b}
    for key in () if loose else DETAIL_KEYS:
        if key in source.detail or key in replayed.detail:
            a, b = source.detail.get(key), replayed.detail.get(key)
            if a != b:
                found[key] = {"source": a, "replay": b}
    return found


class Replay:
    """One replay of ``source`` into the coordinator ``coord`` opened on a fresh directory."""

    def __init__(self, source: Source, coord: Any, report: Report) -> None:
        self.source = source
        self.coord = coord
        self.report = report
        #: source resource id -> replayed id (they differ when the source's bytes changed)
        self.ids: dict[str, str] = {}
        self._versions_seen: set[str] = set()

    def run(self, until: int | None) -> Report:
        report = self.report
        for record in self.source.records(until):
            report.records += 1
            divergence = self.step(record)
            if divergence is not None:
                report.divergence = divergence
                break
            report.identical_through = record.seq
        return report

    def step(self, record: AuditRecord) -> dict[str, Any] | None:
        kind = record.record_kind
        if kind == "deploy" and record.status == "succeeded" and record.resource_id:
            return self.deploy(record)
        if kind == "security" and record.status == "succeeded" \
                and record.detail.get("action") == "set_policy" and record.resource_id:
            return self.set_policy(record)
        if top_level(record):
            if recorded_only(record):
                self.write_recorded(record)
                return None
            return self.execute(record)
        return None

    # -- steps -------------------------------------------------------------------------------
    def deploy(self, record: AuditRecord) -> dict[str, Any] | None:
        rid = str(record.resource_id)
        found = self.source.resource(rid)
        info, detail = found.info, record.detail
        policy = detail.get("policy")
        # the engine options it was deployed with (batching, instances), when it had any
        options = dict(getattr(info, "options", None) or {})
        try:
            new = self.coord.deploy(
                found.code, info.type, name=info.name, owner=info.owner,
                capabilities=detail.get("capabilities", sorted(info.capabilities)),
                policy=_policy(policy) if isinstance(policy, dict) else info.policy,
                **({"options": options} if options else {}))
        except CoordinatorError as exc:
            return _diverged(record, {"deploy": {"source": "succeeded",
                                                 "replay": f"{exc.kind.value}: {exc.message}"}})
        self.ids[rid] = new
        if new != rid:
            self.report.notes.append(f"resource {rid} no longer matches its stored bytes "
                                     f"(changed in the source); replayed as {new}")
        self.report.deploys += 1
        return None

    def set_policy(self, record: AuditRecord) -> dict[str, Any] | None:
        rid = self.ids.get(str(record.resource_id), str(record.resource_id))
        try:
            self.coord.set_policy(rid, _policy(record.detail), caller=record.caller or "")
        except CoordinatorError as exc:
            return _diverged(record, {"set_policy": {"source": "succeeded",
                                                     "replay": f"{exc.kind.value}: {exc.message}"}})
        self.report.policies += 1
        return None

    def execute(self, record: AuditRecord) -> dict[str, Any] | None:
        body = self.source.request_body(str(record.detail.get("request")))
        if body is None:  # checked before the walk; a log changed meanwhile
            raise InvalidRequest(f"record {record.seq} has no kept request")
        request, data = request_of(body)
        self._note_versions(data)
        request = attrs.evolve(request, resource_id=self.ids.get(request.resource_id,
                                                                  request.resource_id))
        result = self.coord.execute(request)
        replayed = self.coord.store.execution(result.execution_id)
        self.report.replayed += 1
        if replayed is not None and (record.detail.get("nondeterministic")
                                     or replayed.detail.get("nondeterministic")):
            self.report.nondeterministic += 1
        if replayed is None:
            return _diverged(record, {"record": {"source": "written", "replay": "missing"}})
        found = differences(record, replayed)
        if found:
            divergence = _diverged(record, found)
            divergence["replay_execution_id"] = result.execution_id
            divergence["source_message"] = record.message
            divergence["replay_message"] = replayed.message
            return divergence
        return None

    def write_recorded(self, record: AuditRecord) -> None:
        """Write the source's final record as it is, marked ``replayed: recorded`` (its
        request re-kept when the source kept it, so the new log can be replayed too)."""
        detail = dict(record.detail)
        digest = detail.get("request")
        body = self.source.request_body(digest) if isinstance(digest, str) else None
        if body is not None:
            detail["request"] = RequestRef(body)
        detail["replayed"] = "recorded"
        rid = record.resource_id
        self.coord.store.append(attrs.evolve(
            record, seq=0, resource_id=self.ids.get(rid, rid) if rid else rid, detail=detail,
            leaf_hash="", chain_hash=""))
        self.report.recorded += 1

    def _note_versions(self, data: dict[str, Any]) -> None:
        then = data.get("versions") or {}
        engine = next((b.engine for b in self.coord.dispatcher.engines
                       if b.name == data.get("engine")), None)
        now = versions(type(engine).__module__ if engine is not None else None)
        changed = sorted(f"{k} {then[k]} -> {now[k]}" for k in then
                         if k in now and now[k] != then[k])
        for text in changed:
            if text not in self._versions_seen:
                self._versions_seen.add(text)
                self.report.notes.append(f"replayed with a different version: {text}")


def _policy(data: Mapping[str, Any]) -> AccessPolicy:
    return AccessPolicy(public=bool(data.get("public", True)),
                        allow=frozenset(data.get("allow", ())),
                        deny=frozenset(data.get("deny", ())))


def _diverged(record: AuditRecord, found: dict[str, Any]) -> dict[str, Any]:
    return {"seq": record.seq, "record_kind": record.record_kind,
            "execution_id": record.execution_id, "resource_id": record.resource_id,
            "differences": found}
