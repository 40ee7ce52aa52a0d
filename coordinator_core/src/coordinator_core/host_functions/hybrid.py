"""Built-in plugin ``hybrid``: the ``models`` capability, so a contract can call a model.

SPEC.md's third flow, "hybrid -> multi-engine". A WASM contract granted ``models``
imports ``env.model_infer(rid_ptr, rid_len, in_ptr, in_len, out_ptr, out_cap) -> i32``. The
call runs a *nested execution* through the core's ``ExecutionContext.invoke``, i.e. through
the whole pipeline again: security (the target's policy must admit the original caller, and
the ``security-nested`` validator below makes it admit the calling contract too), quota
(charged to the original caller through the parent, which holds it), the depth limit
(``[coordinator] max_depth``), its own audit record linked to the parent by ``parent_id``.
Its fee is charged to the parent, its effects are folded into the parent's, so if the parent
fails afterwards nothing either wrote survives. A failed call returns a negative code and the
contract decides whether to trap. The encoding and the code table are in docs/hybrid.md.

Config ``[hybrid]``::

    fee_per_call = 1000        # charged for every model_infer call, on top of the nested fee
    fee_per_byte = 1           # per byte of rid, input and output crossing the boundary
    max_io_bytes = 1048576     # cap on in_len and on out_cap (a breach traps)
    tensor_types = ["onnx"]    # targets fed the tensor encoding; others get raw bytes
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

from coordinator_core.host_functions.codec import EncodingError, decode_tensors, encode_tensors
from coordinator_core.services.security.access import policy_refusal
from coordinator_hookspecs import (
    ERROR_OF_KIND,
    ConfigSection,
    CoordinatorError,
    EngineError,
    ErrorKind,
    ExecutionRequest,
    HostFunctionRecord,
    ResourceInfo,
    Status,
    Trap,
    ValidatorRecord,
    Verdict,
    hookimpl,
)

SECTION = "hybrid"
CAPABILITY = "models"
HOST_FUNCTION = "model_infer"
VALIDATOR = "security-nested"
#: How a calling contract is named in a target's access policy (allow, deny, owner).
CONTRACT_PREFIX = "contract:"

# The negative codes of model_infer (docs/hybrid.md); a non-negative value is the length of
# the encoded output written at out_ptr.
DENIED = -1
NOT_FOUND = -2
FEE_EXHAUSTED = -3
BAD_INPUT = -4
OUTPUT_TOO_LARGE = -5
MODEL_FAILED = -6
DEPTH_LIMIT = -7
STOPPED = -8

CODE_OF_KIND: dict[ErrorKind, int] = {
    ErrorKind.SECURITY_REJECTED: DENIED,
    ErrorKind.QUOTA_EXCEEDED: DENIED,
    ErrorKind.NOT_FOUND: NOT_FOUND,
    ErrorKind.FEE_EXHAUSTED: FEE_EXHAUSTED,
    ErrorKind.INVALID_REQUEST: BAD_INPUT,
    ErrorKind.TRAP: MODEL_FAILED,
    ErrorKind.ENGINE_ERROR: MODEL_FAILED,
    ErrorKind.INTERNAL: MODEL_FAILED,
    ErrorKind.TIMEOUT: STOPPED,
    ErrorKind.CANCELLED: STOPPED,
}
_RID = re.compile(rb"^[0-9a-f]{64}$")
_I32 = "i32"


@attrs.frozen
class HybridConfig:
    """The ``[hybrid]`` section."""

    fee_per_call: int = attrs.field(default=1000, validator=attrs.validators.ge(0))
    fee_per_byte: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    max_io_bytes: int = attrs.field(default=1024 * 1024, validator=attrs.validators.gt(0))
    tensor_types: frozenset[str] = frozenset({"onnx"})


class ModelInfer:
    """The ``model_infer`` host function of one coordinator.

    ``bind(resource)`` hands it ``Coordinator.resource`` at start-up: it needs the target's
    type to choose the encoding, and a readable ``NOT_FOUND`` before anything runs.
    """

    def __init__(self, cfg: HybridConfig) -> None:
        self.cfg = cfg
        self._resource: Callable[[str], ResourceInfo] | None = None

    def bind(self, resource: Callable[[str], ResourceInfo]) -> None:
        self._resource = resource

    def __call__(self, call: Any, rid_ptr: int, rid_len: int, in_ptr: int, in_len: int,
                 out_ptr: int, out_cap: int) -> int:
        cfg = self.cfg
        if not 0 <= in_len <= cfg.max_io_bytes or not 0 <= out_cap <= cfg.max_io_bytes:
            raise Trap(f"model_infer: in_len {in_len} and out_cap {out_cap} must be between 0 "
                       f"and {cfg.max_io_bytes} ({SECTION}.max_io_bytes)")
        if not 0 <= rid_len <= 256:
            raise Trap(f"model_infer: rid_len {rid_len} is not a resource id length")
        raw_rid = call.read(rid_ptr, rid_len)
        data = call.read(in_ptr, in_len)
        call.charge(cfg.fee_per_byte * (rid_len + in_len))
        ctx = call.context
        if CAPABILITY not in ctx.resource.capabilities:
            return DENIED  # the engine refuses the import already; this is the second lock
        if ctx.invoke is None:
            return DEPTH_LIMIT
        if not _RID.match(raw_rid):
            return BAD_INPUT
        if self._resource is None:  # never started in a coordinator: a process-pool worker
            raise EngineError(
                "model_infer runs nested executions, which exist only in the coordinator's "
                "own process, not in a process-pool worker: run hybrid contracts on threads "
                "([dispatch] process_engines)"
            )
        rid = raw_rid.decode("ascii")
        try:
            target = self._resource(rid)
        except CoordinatorError as exc:
            return CODE_OF_KIND.get(exc.kind, NOT_FOUND)
        tensors = target.type in cfg.tensor_types
        payload: Any = data
        if tensors:
            try:
                payload = decode_tensors(data)
            except EncodingError:
                return BAD_INPUT
        remaining = call.fee_remaining()
        if remaining <= 0:
            return FEE_EXHAUSTED
        result = ctx.invoke(ExecutionRequest(
            resource_id=rid, caller=ctx.request.caller, input=payload, fee_limit=remaining))
        call.charge(min(max(result.fee_used, 0), remaining))
        reason = ctx.token.poll()
        if reason is not None:  # the parent itself was cancelled or passed its deadline
            raise ERROR_OF_KIND[reason](f"{reason.value} while model_infer ran {rid[:12]}")
        if result.status is not Status.SUCCEEDED:
            kind = result.error.kind if result.error is not None else ErrorKind.INTERNAL
            return CODE_OF_KIND.get(kind, MODEL_FAILED)
        encoded = _encode(result.output, tensors)
        if encoded is None:
            return MODEL_FAILED
        if len(encoded) > out_cap:
            return OUTPUT_TOO_LARGE
        call.charge(cfg.fee_per_byte * len(encoded))
        call.write(out_ptr, encoded)
        for effect in result.effects:  # committed with the parent's, or not at all
            call.emit(effect)
        return len(encoded)


def _encode(output: Any, tensors: bool) -> bytes | None:
    if tensors:
        try:
            return encode_tensors(output)
        except (EncodingError, AttributeError, TypeError, ValueError, OverflowError):
            return None
    if isinstance(output, (bytes, bytearray, memoryview)):
        return bytes(output)
    return None if output is not None else b""


class NestedAccessValidator:
    """``security-nested``: a nested execution's target must admit the calling contract.

    The caller of a nested request is the original caller (checked by ``security-access``
    as for any request); this validator names the calling contract ``contract:<rid>`` (the
    core sets ``parent_resource_id`` on nested requests and refuses it on top-level ones) and
    applies the target's policy to it with the same rules: owner admitted, deny wins, public
    admits, a private target needs it on its allow list.
    """

    def validate_execution(self, request: ExecutionRequest,
                           resource: ResourceInfo) -> Verdict | None:
        calling = request.parent_resource_id
        if calling is None:
            return None
        subject = CONTRACT_PREFIX + calling
        reason = policy_refusal(resource, subject, f"calling contract {subject!r}")
        return None if reason is None else Verdict.reject(reason)


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=SECTION, type=HybridConfig)]


@hookimpl
def coordinator_register_host_functions(config: Any) -> list[HostFunctionRecord]:
    cfg: HybridConfig = config.section(SECTION)
    return [HostFunctionRecord(name=HOST_FUNCTION, capability=CAPABILITY, func=ModelInfer(cfg),
                               params=(_I32,) * 6, results=(_I32,), fee=cfg.fee_per_call)]


@hookimpl
def coordinator_register_validators(config: Any) -> list[ValidatorRecord]:
    # Priority 25: right after security-access (20) has checked the original caller.
    return [ValidatorRecord(name=VALIDATOR, validator=NestedAccessValidator(), priority=25)]


@hookimpl
def coordinator_startup(coordinator: Any) -> None:
    """Bind this coordinator's host function to its resource lookup."""
    for record in coordinator.registry.host_functions:
        if record.name == HOST_FUNCTION and isinstance(record.func, ModelInfer):
            record.func.bind(coordinator.resource)
