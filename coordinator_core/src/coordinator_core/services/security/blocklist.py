"""Built-in validator ``security-blocklist``: resource hashes that may never run.

Resource ids are the sha256 of the canonical bytes, the same for every engine, so one list
blocks known-bad code whatever its type: a blocked hash is refused at deploy (nothing is
stored) and at execution (for a resource deployed before it was blocked). The execution
verdict depends only on the resource, so it is cacheable.

Config ``[security-blocklist]``::

    hashes = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
    reason = "listed by the operator"    # shown in the rejection
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from coordinator_hookspecs import (
    ConfigSection,
    DeployRequest,
    ExecutionRequest,
    InvalidRequest,
    ResourceInfo,
    SecurityRejected,
    ValidatorRecord,
    Verdict,
    hookimpl,
)

NAME = "security-blocklist"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@attrs.frozen
class BlocklistConfig:
    """The ``[security-blocklist]`` section."""

    hashes: frozenset[str] = frozenset()
    reason: str = "listed by the operator"


def _normalise(hashes: frozenset[str]) -> frozenset[str]:
    out = set()
    for value in hashes:
        text = str(value).strip().lower()
        if not _SHA256.match(text):
            raise InvalidRequest(
                f"invalid configuration: [{NAME}].hashes has {value!r}, which is not a "
                "sha256 hex digest (64 hex characters)")
        out.add(text)
    return frozenset(out)


class BlocklistValidator:
    """Refuses deploys and executions of resources whose hash is on the list."""

    def __init__(self, cfg: BlocklistConfig | None = None) -> None:
        cfg = cfg or BlocklistConfig()
        self.blocked = _normalise(cfg.hashes)
        self.reason = cfg.reason

    def validate_deploy(self, deploy: DeployRequest) -> None:
        if deploy.resource_id in self.blocked:
            raise SecurityRejected(
                f"resource {deploy.resource_id} is blocklisted ({self.reason})", source=NAME)

    def validate_execution(self, request: ExecutionRequest,
                           resource: ResourceInfo) -> Verdict | None:
        if resource.id in self.blocked:
            return Verdict.reject(f"resource {resource.id} is blocklisted ({self.reason})")
        return None


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=NAME, type=BlocklistConfig)]


@hookimpl
def coordinator_register_validators(config: Any) -> list[ValidatorRecord]:
    return [ValidatorRecord(name=NAME, validator=BlocklistValidator(config.section(NAME)),
                            priority=10, cacheable=True)]
