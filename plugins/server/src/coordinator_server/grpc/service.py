"""``inference.GRPCInferenceService``: the Open Inference Protocol's gRPC calls over the same
coordinator, keys and model index as the REST routes.

Each call but ServerLive and ServerReady needs ``authorization: Bearer <token>`` metadata
with a key of the execute scope, as the REST routes do; a missing or bad token ends in
UNAUTHENTICATED and a key that lacks the scope (or a request naming another caller) in
PERMISSION_DENIED, and each such refusal leaves a ``security`` audit record (without the
token). Every other failure ends in the gRPC status of its error kind (:data:`STATUS_OF`) with
the kind itself in the trailing metadata ``coordinator-error-kind``, so a client can tell
``quota_exceeded`` from ``fee_exhausted``. ModelInfer is one execution through the whole
pipeline with the key's name as caller; ``parameters`` may carry ``timeout`` (seconds, as over
REST) and ``fee_limit``, and a client deadline shorter than the execution's timeout (given or
the default) becomes its timeout, so no execution outlives the call that wants it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from loguru import logger

from coordinator_hookspecs import (
    CoordinatorError,
    ErrorKind,
    ExecutionRequest,
    InvalidRequest,
    SecurityRejected,
)
from coordinator_server import oip, strict
from coordinator_server.app import NO_AUTH, BodyTooLarge, ServerState
from coordinator_server.grpc import convert
from coordinator_server.grpc import inference_pb2 as pb
from coordinator_server.grpc import inference_pb2_grpc as pb_grpc
from coordinator_server.keys import ApiKey
from coordinator_server.tensors import check_outputs

#: gRPC status of each error kind.
STATUS_OF: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.SECURITY_REJECTED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.QUOTA_EXCEEDED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.FEE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.TRAP: grpc.StatusCode.ABORTED,
    ErrorKind.ENGINE_ERROR: grpc.StatusCode.INTERNAL,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}
KIND_KEY = "coordinator-error-kind"
EXECUTION_KEY = "coordinator-execution-id"
SERVICE = "inference.GRPCInferenceService"
#: who an audit record names for a request that showed no valid key.
UNAUTHENTICATED_CALLER = "unauthenticated"

Reply = TypeVar("Reply")


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str,
                kind: str | None, execution_id: str | None = None) -> NoReturn:
    """End the call with ``code``; ``kind`` and ``execution_id`` go in trailing metadata."""
    trailing = ([(KIND_KEY, kind)] if kind else []) + (
        [(EXECUTION_KEY, execution_id)] if execution_id else [])
    await context.abort(code, message, trailing_metadata=tuple(trailing))
    raise AssertionError("context.abort returned")  # pragma: no cover - it always raises


def _bearer(context: grpc.aio.ServicerContext) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The servicer; ``state`` is shared with the REST application."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    # -- what every keyed call does first -----------------------------------------------------
    async def _refuse(self, context: grpc.aio.ServicerContext, caller: str, method: str,
                      action: str, error: CoordinatorError, code: grpc.StatusCode,
                      kind: str) -> NoReturn:
        """Leave the refusal's security audit record, then end the call with ``code``."""
        detail = {"action": action, "surface": "grpc", "method": f"{SERVICE}/{method}",
                  "peer": context.peer()}
        try:
            await asyncio.to_thread(self.state.coordinator.record_security_event, caller,
                                    detail, error)
        except Exception as exc:  # the refusal stands even if the record cannot be written
            logger.error("could not record a refused gRPC call: {}", exc)
        await abort(context, code, error.message, kind)

    async def _key(self, context: grpc.aio.ServicerContext, method: str,
                   scope: str = "execute") -> ApiKey:
        """The calling key, after readiness, authentication and ``scope``."""
        state = self.state
        if state.coordinator is None or state.keys is None:
            message = ("the coordinator is not open yet" if state.failed is None
                       else f"the coordinator failed to open: {state.failed}")
            await abort(context, grpc.StatusCode.UNAVAILABLE, message, None)
        if not state.auth:
            return NO_AUTH
        token = _bearer(context)
        # One indexed SQLite read, done on the loop as the REST routes do: a thread hop
        # would cost more than the read.
        key = None if token is None else state.keys.verify(token)
        if key is None:
            message = ("this call needs 'authorization: Bearer <token>' metadata"
                       if token is None else "the bearer token is not an active key")
            await self._refuse(context, UNAUTHENTICATED_CALLER, method, "authenticate",
                               SecurityRejected(message, source="server"),
                               grpc.StatusCode.UNAUTHENTICATED, "unauthorized")
        if not key.allows(scope):
            message = f"the key {key.name!r} has scope {key.scope!r}; this needs {scope!r}"
            await self._refuse(context, key.name, method, "authorize",
                               SecurityRejected(message, source="server"),
                               grpc.StatusCode.PERMISSION_DENIED,
                               ErrorKind.SECURITY_REJECTED.value)
        return key

    async def _guarded(self, context: grpc.aio.ServicerContext,
                       call: Callable[[], Awaitable[Reply]]) -> Reply:
        try:
            return await call()
        except grpc.aio.AbortError:
            raise
        except CoordinatorError as exc:
            code = (grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, BodyTooLarge)
                    else STATUS_OF.get(exc.kind, grpc.StatusCode.INTERNAL))
            await abort(context, code, exc.message, exc.kind.value)
        except Exception as exc:  # a bug: INTERNAL with no detail, as a 500 would be
            logger.opt(exception=exc).error("gRPC call failed")
            await abort(context, grpc.StatusCode.INTERNAL, "internal error",
                        ErrorKind.INTERNAL.value)

    # -- health: no key ---------------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.ready)

    # -- metadata -----------------------------------------------------------------------------
    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        await self._key(context, "ServerMetadata")
        return pb.ServerMetadataResponse(name="coordinator", version=oip._version(),
                                         extensions=oip.EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        await self._key(context, "ModelMetadata")

        async def call() -> pb.ModelMetadataResponse:
            models = self.state.models
            info, _ = models.get(request.name, request.version or None)
            return pb.ModelMetadataResponse(
                name=request.name,
                versions=[str(i + 1) for i in range(len(models.versions(request.name)))],
                platform=oip._platform(info),
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t)
                        for t in oip._tensors(info.meta["inputs"])],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**t)
                         for t in oip._tensors(info.meta["outputs"])])

        return await self._guarded(context, call)

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        await self._key(context, "ModelReady")

        async def call() -> pb.ModelReadyResponse:
            info, _ = self.state.models.get(request.name, request.version or None)
            engine = self.state.coordinator.engine_for(info.type)
            health = getattr(engine, "health", None)
            return pb.ModelReadyResponse(ready=bool(health()) if callable(health) else True)

        return await self._guarded(context, call)

    # -- infer --------------------------------------------------------------------------------
    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        key = await self._key(context, "ModelInfer")
        parameters = convert.parameters_dict(request.parameters)
        claimed = parameters.get("caller")
        if claimed is not None and claimed != key.name:
            message = (f"the caller is the key's name {key.name!r}; the request may not name "
                       f"another ({str(claimed)[:64]!r})")
            await self._refuse(context, key.name, "ModelInfer", "authorize",
                               SecurityRejected(message, source="server"),
                               grpc.StatusCode.PERMISSION_DENIED,
                               ErrorKind.SECURITY_REJECTED.value)
        return await self._guarded(
            context, lambda: self._infer(request, parameters, key, context))

    async def _infer(self, request: pb.ModelInferRequest, parameters: dict[str, Any],
                     key: ApiKey, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        state = self.state
        size = request.ByteSize()
        if size > state.max_body:
            raise BodyTooLarge(f"the request is {size} bytes, over the limit of "
                               f"{state.max_body} ([server] max_body_bytes)")
        info, version = state.models.get(request.model_name, request.model_version or None)
        feeds = convert.decode_inputs(request)
        wanted = [o.name for o in request.outputs] or None
        check_outputs([s["name"] for s in info.meta["outputs"]], wanted)
        timeout = strict.timeout(parameters.get("timeout"), "parameters.timeout")
        remaining = context.time_remaining()
        if remaining is not None:
            if remaining <= 0:
                raise InvalidRequest("the call's deadline has already passed")
            default = state.coordinator.config.core.default_timeout
            timeout = min(default if timeout is None else timeout, remaining)
        result = await state.coordinator.execute_async(ExecutionRequest(
            resource_id=info.id, caller=key.name, input=feeds,
            fee_limit=strict.fee_limit(parameters.get("fee_limit"), "parameters.fee_limit"),
            timeout=timeout))
        if result.error is not None:
            await abort(context, STATUS_OF.get(result.error.kind, grpc.StatusCode.INTERNAL),
                        result.error.message, result.error.kind.value, result.execution_id)
        response = pb.ModelInferResponse(model_name=request.model_name, model_version=version,
                                         id=request.id)
        convert.set_parameter(response.parameters, "execution_id", result.execution_id)
        convert.set_parameter(response.parameters, "fee_used", int(result.fee_used))
        convert.set_parameter(response.parameters, "cpu_seconds", float(result.cpu_seconds))
        convert.set_parameter(response.parameters, "memory_bytes", int(result.memory_bytes))
        convert.encode_outputs(response, result.output, wanted)
        return response
