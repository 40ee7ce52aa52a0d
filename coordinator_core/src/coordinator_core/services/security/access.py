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


def policy_refusal(resource: ResourceInfo, subject: str, who: str,
                   admins: frozenset[str] = frozenset()) -> str | None:
    """Why ``subject`` may not execute ``resource``, or None when its policy admits it: the
    owner always; otherwise the deny list wins over ``public``, the allow list and admins.
    ``who`` names the subject in the message. (Also used for calling contracts by the
    ``security-nested`` validator of host_functions/hybrid.py.)"""
    if resource.owner and subject == resource.owner:
        return None
    policy = resource.policy
    if subject in policy.deny:
        return f"{who} is on the deny list of resource {resource.id}"
    if policy.public or subject in policy.allow or subject in admins:
        return None
    return (f"{who} is not allowed to execute private resource {resource.id} "
            "(not its owner, not on its allow list)")


class AccessPolicyValidator:
    """Applies ``resource.policy`` and the owner rule to each (resource, caller)."""

    def __init__(self, cfg: AccessConfig | None = None) -> None:
        self.admins = (cfg or AccessConfig()).admins

    def validate_execution(self, request: ExecutionRequest,
                           resource: ResourceInfo) -> Verdict | None:
        caller = request.caller
        reason = policy_refusal(resource, caller, f"caller {caller!r}", self.admins)
        return None if reason is None else Verdict.reject(reason)


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=NAME, type=AccessConfig)]


@hookimpl
def coordinator_register_validators(config: Any) -> list[ValidatorRecord]:
    return [ValidatorRecord(name=NAME, validator=AccessPolicyValidator(config.section(NAME)),
                            priority=20, cacheable=True)]
