"""SecurityIntegrator: runs the validator records in priority order (SPEC.md, security layer).

Execution-time validators are frozen into a tuple of plain tuples at start-up; the walk is a
loop with no pluggy call. The first hard rejection stops it (fail fast). Admitting verdicts
may carry a risk score; the weighted sum reaching the threshold rejects, naming the
validators that contributed. A validator marked ``cacheable`` is asked once per
(resource, caller); its verdict is kept in a bounded cache, dropped when the resource's
policy changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from coordinator_core.log import logger
from coordinator_hookspecs import (
    CoordinatorError,
    DeployRequest,
    ExecutionRequest,
    ResourceInfo,
    SecurityRejected,
    ValidatorBase,
    ValidatorRecord,
    Verdict,
    optional,
)

_ADMIT = object()  # cached "no objection" (a validator returned None)


class SecurityIntegrator:
    """Walks execution and deploy validators; thread-safe without locks (dict ops only)."""

    def __init__(
        self, records: Sequence[ValidatorRecord], *, threshold: float = 1.0, cache_size: int = 65536
    ) -> None:
        self.threshold = threshold
        self.cache_size = cache_size
        self._cache: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # Bound once; a check a validator only inherits from ValidatorBase is never walked.
        self.execution_validators = tuple(
            (r.name, check, r.weight, r.applies_to, r.cacheable)
            for r in records
            if (check := optional(r.validator, "validate_execution", ValidatorBase))
        )
        self.deploy_validators = tuple(
            (r.name, check, r.weight, r.applies_to)
            for r in records
            if (check := optional(r.validator, "validate_deploy", ValidatorBase))
        )

    def check_execution(self, request: ExecutionRequest, resource: ResourceInfo) -> None:
        """Raise ``SecurityRejected`` (or the validator's own typed error) to refuse."""
        risk = 0.0
        contributors: list[str] | None = None
        cache = self._cache
        for name, validate, weight, applies_to, cacheable in self.execution_validators:
            if applies_to is not None and resource.type not in applies_to:
                continue
            if cacheable:
                # Keyed by the policy object too: an execution that read the resource before
                # a policy change cannot leave its stale verdict behind for later callers.
                key = (name, resource.id, request.caller)
                hit = cache.get(key)
                if hit is not None and hit[0] is resource.policy:
                    verdict = hit[1]
                else:
                    verdict = _ask(name, validate, request, resource)
                    self._remember(key, (resource.policy, verdict))
            else:
                verdict = _ask(name, validate, request, resource)
            if verdict is _ADMIT:
                continue
            if not verdict.allow:
                raise SecurityRejected(verdict.reason or "rejected", source=name)
            if verdict.score:
                risk += verdict.score * weight
                contributors = [*(contributors or ()), name]
        if risk >= self.threshold and contributors:
            raise SecurityRejected(
                f"risk score {risk:.2f} reached the threshold {self.threshold:.2f} "
                f"({', '.join(contributors)})",
                source=contributors[0],
            )

    def check_deploy(self, deploy: DeployRequest) -> None:
        """Deploy-time validation; always runs (it protects the engines themselves)."""
        risk = 0.0
        for name, validate, weight, applies_to in self.deploy_validators:
            if applies_to is not None and deploy.resource_type not in applies_to:
                continue
            verdict = _ask(name, validate, deploy)
            if verdict is _ADMIT:
                continue
            if not verdict.allow:
                raise SecurityRejected(verdict.reason or "rejected", source=name)
            risk += verdict.score * weight
        if risk >= self.threshold:
            raise SecurityRejected(f"deploy risk score {risk:.2f} reached the threshold")

    def invalidate(self, resource_id: str | None = None) -> None:
        """Forget cached verdicts (of one resource, or all)."""
        if resource_id is None:
            self._cache.clear()
            return
        for key in [k for k in list(self._cache) if k[1] == resource_id]:
            self._cache.pop(key, None)

    def _remember(self, key: tuple[str, str, str], verdict: Any) -> None:
        if len(self._cache) >= self.cache_size:
            try:  # drop the oldest entry; dicts keep insertion order
                del self._cache[next(iter(self._cache))]
            except (StopIteration, KeyError, RuntimeError):
                pass
        self._cache[key] = verdict


def _ask(name: str, validate: Any, *args: Any) -> Any:
    """Call one validator; anything but a typed error or a verdict fails closed."""
    try:
        verdict = validate(*args)
    except CoordinatorError as exc:
        if exc.source is None:
            exc.source = name
        raise
    except Exception as exc:
        # The rejection reaches the caller as one line; the author of a broken validator
        # needs the traceback, so it goes to the log (at debug: a validator that keeps
        # failing must not flood a production log with tracebacks).
        reason = f"validator {name} failed ({type(exc).__name__}: {exc}); refusing"
        logger.opt(exception=exc).debug("validator {} raised", name)
        logger.warning(reason)
        raise SecurityRejected(reason, source=name) from exc
    if verdict is None:
        return _ADMIT
    if not isinstance(verdict, Verdict):
        raise SecurityRejected(
            f"validator {name} returned {type(verdict).__name__}, not a Verdict; refusing",
            source=name,
        )
    score = verdict.score
    if type(score) not in (int, float) or not math.isfinite(score):
        raise SecurityRejected(
            f"validator {name} returned a verdict with score {score!r}, not a finite number; "
            "refusing", source=name,
        )
    return verdict
