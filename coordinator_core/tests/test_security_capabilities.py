"""The ``security-capabilities`` deploy validator: required capabilities must be granted."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator_core.services.security.capabilities import (
    CapabilitiesConfig,
    CapabilityGrantValidator,
)
from coordinator_hookspecs import DeployRequest, ErrorKind, InvalidRequest, SecurityRejected

RID = "ef" * 32


def deploy(granted: set[str], required: Any = None) -> DeployRequest:
    meta = {} if required is None else {"required_capabilities": required}
    return DeployRequest(code=b"\0asm", resource_type="wasm", resource_id=RID,
                         capabilities=frozenset(granted), meta=meta)


def test_granted_capabilities_cover_the_requirements() -> None:
    v = CapabilityGrantValidator()
    v.validate_deploy(deploy(set()))
    v.validate_deploy(deploy(set(), ["io"]))  # io is always granted
    v.validate_deploy(deploy({"storage", "events"}, ["storage", "io"]))
    v.validate_deploy(deploy({"models"}, ("models",)))


def test_missing_capabilities_are_named() -> None:
    with pytest.raises(SecurityRejected) as info:
        CapabilityGrantValidator().validate_deploy(deploy({"storage"}, ["storage", "models",
                                                                        "events"]))
    err = info.value
    assert err.kind is ErrorKind.SECURITY_REJECTED and err.source == "security-capabilities"
    assert "events, models" in err.message and RID in err.message


def test_a_contract_needs_models_to_call_a_model() -> None:
    with pytest.raises(SecurityRejected, match="models"):
        CapabilityGrantValidator().validate_deploy(deploy({"storage"}, ["models"]))


@pytest.mark.parametrize("name", ["Storage", "", "a b", "9lives", "x" * 64])
def test_malformed_grant_names_are_invalid_requests(name: str) -> None:
    with pytest.raises(InvalidRequest, match="malformed"):
        CapabilityGrantValidator().validate_deploy(deploy({name}))


@pytest.mark.parametrize("required", ["storage", 7, [1], {"a": 1}])
def test_malformed_requirements_fail_closed(required: Any) -> None:
    with pytest.raises(SecurityRejected, match="malformed required_capabilities"):
        CapabilityGrantValidator().validate_deploy(deploy(set(), required))


def test_grantable_restricts_what_may_be_granted() -> None:
    v = CapabilityGrantValidator(CapabilitiesConfig(grantable=frozenset({"storage"})))
    v.validate_deploy(deploy({"storage", "io"}))
    with pytest.raises(SecurityRejected, match="models may not be granted"):
        v.validate_deploy(deploy({"storage", "models"}))


def test_always_granted_is_configurable() -> None:
    v = CapabilityGrantValidator(CapabilitiesConfig(always_granted=frozenset()))
    with pytest.raises(SecurityRejected, match="io"):
        v.validate_deploy(deploy(set(), ["io"]))
