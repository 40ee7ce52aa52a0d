"""The ``security-blocklist`` validator: blocked hashes never deploy nor run."""

from __future__ import annotations

import hashlib

import pytest

from coordinator_core.services.security.blocklist import BlocklistConfig, BlocklistValidator
from coordinator_hookspecs import (
    DeployRequest,
    ExecutionRequest,
    InvalidRequest,
    ResourceInfo,
    SecurityRejected,
)

BAD = hashlib.sha256(b"bad code").hexdigest()
GOOD = hashlib.sha256(b"good code").hexdigest()


def validator() -> BlocklistValidator:
    # Upper case on purpose: the list is normalised, ids are lowercase hex.
    return BlocklistValidator(BlocklistConfig(hashes=frozenset({BAD.upper()}), reason="malware"))


def test_blocked_hash_is_refused_at_deploy() -> None:
    v = validator()
    v.validate_deploy(DeployRequest(code=b"good code", resource_type="wasm", resource_id=GOOD))
    with pytest.raises(SecurityRejected) as info:
        v.validate_deploy(DeployRequest(code=b"bad code", resource_type="onnx", resource_id=BAD))
    assert BAD in info.value.message and "malware" in info.value.message
    assert info.value.source == "security-blocklist"


def test_blocked_hash_is_refused_at_execution() -> None:
    v = validator()
    ok = ResourceInfo(id=GOOD, type="wasm")
    assert v.validate_execution(ExecutionRequest(resource_id=GOOD), ok) is None
    bad = ResourceInfo(id=BAD, type="wasm")
    rejected = v.validate_execution(ExecutionRequest(resource_id=BAD), bad)
    assert rejected is not None and not rejected.allow and BAD in rejected.reason


def test_malformed_hash_in_config_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"\[security-blocklist\]\.hashes"):
        BlocklistValidator(BlocklistConfig(hashes=frozenset({"not-a-hash"})))
