"""The ``security-access`` validator: owner, allow list, deny list, public flag, admins."""

from __future__ import annotations

from coordinator_core.services.security.access import AccessConfig, AccessPolicyValidator
from coordinator_hookspecs import AccessPolicy, ExecutionRequest, ResourceInfo

RID = "cd" * 32


def verdict(policy: AccessPolicy, caller: str, *, owner: str = "olga",
            admins: frozenset[str] = frozenset()):  # type: ignore[no-untyped-def]
    resource = ResourceInfo(id=RID, type="wasm", owner=owner, policy=policy)
    validator = AccessPolicyValidator(AccessConfig(admins=admins))
    return validator.validate_execution(ExecutionRequest(resource_id=RID, caller=caller), resource)


def test_public_resource_admits_everyone_but_the_denied() -> None:
    policy = AccessPolicy(public=True, deny=frozenset({"mallory"}))
    assert verdict(policy, "alice") is None
    rejected = verdict(policy, "mallory")
    assert rejected is not None and not rejected.allow
    assert "'mallory'" in rejected.reason and RID in rejected.reason and "deny" in rejected.reason


def test_private_resource_admits_only_the_allow_list_and_owner() -> None:
    policy = AccessPolicy(public=False, allow=frozenset({"bob"}))
    assert verdict(policy, "bob") is None
    assert verdict(policy, "olga") is None
    rejected = verdict(policy, "carol")
    assert rejected is not None and not rejected.allow
    assert "'carol'" in rejected.reason and RID in rejected.reason


def test_deny_wins_over_allow() -> None:
    policy = AccessPolicy(public=False, allow=frozenset({"bob"}), deny=frozenset({"bob"}))
    rejected = verdict(policy, "bob")
    assert rejected is not None and not rejected.allow


def test_owner_is_always_admitted() -> None:
    policy = AccessPolicy(public=False, deny=frozenset({"olga"}))
    assert verdict(policy, "olga") is None


def test_ownerless_resource_has_no_owner_exception() -> None:
    policy = AccessPolicy(public=False)
    rejected = verdict(policy, "", owner="")
    assert rejected is not None and not rejected.allow


def test_admins_reach_private_resources_unless_denied() -> None:
    admins = frozenset({"ops"})
    assert verdict(AccessPolicy(public=False), "ops", admins=admins) is None
    rejected = verdict(AccessPolicy(public=False, deny=frozenset({"ops"})), "ops", admins=admins)
    assert rejected is not None and not rejected.allow
