"""Built-in validator ``security-access``: who may execute a resource.

Each resource carries an ``AccessPolicy`` (public flag, allow list, deny list), set at deploy
and changeable only by its owner (``Coordinator.set_policy``, CLI ``coordinator policy``).
The rules, in order:

1. the resource's owner may always execute it (an owner cannot lock themselves out);
2. a caller on the deny list is rejected, even if the resource is public or allows it
   (deny wins);
3. a public resource admits everyone else;
4. a private resource admits only callers on its allow list, plus the configured
   ``admins`` (operators who may run everything that does not deny them).

The verdict depends only on (resource, caller), so it is cacheable; the core drops its cache
when a policy changes.

Config ``[security-access]``::

    admins = ["ops"]      # callers admitted to every private resource that does not deny them
"""

from __future__ import annotations

from typing import Any

import attrs

from coordinator_hookspecs import (
    ConfigSection,
    ExecutionRequest,
    ResourceInfo,
    ValidatorRecord,
    Verdict,
    hookimpl,
)

NAME = "security-access"


@attrs.frozen
class AccessConfig:
    """The ``[security-access]`` section."""

    admins: frozenset[str] = frozenset()


class AccessPolicyValidator:
    """Applies ``resource.policy`` and the owner rule to each (resource, caller)."""

    def __init__(self, cfg: AccessConfig | None = None) -> None:
        self.admins = (cfg or AccessConfig()).admins

    def validate_execution(self, request: ExecutionRequest,
                           resource: ResourceInfo) -> Verdict | None:
        caller = request.caller
        if resource.owner and caller == resource.owner:
            return None
        policy = resource.policy
        if caller in policy.deny:
            return Verdict.reject(
                f"caller {caller!r} is on the deny list of resource {resource.id}")
        if policy.public or caller in policy.allow or caller in self.admins:
            return None
        return Verdict.reject(
            f"caller {caller!r} is not allowed to execute private resource {resource.id} "
            "(not its owner, not on its allow list)")


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=NAME, type=AccessConfig)]


@hookimpl
def coordinator_register_validators(config: Any) -> list[ValidatorRecord]:
    return [ValidatorRecord(name=NAME, validator=AccessPolicyValidator(config.section(NAME)),
                            priority=20, cacheable=True)]
