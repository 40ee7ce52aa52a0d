"""Base classes with the no-op default of every optional method, and how the core binds them.

A plugin may inherit one of these to see, in one place, every optional method it could
implement, with the behaviour it gets when it does not. Inheriting is never required: the
core binds each optional method **once** (when a coordinator opens) with :func:`optional`
or :func:`method_or_default`, so an object that lacks one behaves exactly like one that
inherits the default here, and nothing is looked up per execution.

Defaults that would cost the core work on the hot path (``health``, ``holds``,
``pool_stats``, a validator's two checks, a policy's ``snapshot``) are recognised when
inherited and treated as absent: an engine without its own ``health`` is never polled, and a
validator that only overrides ``validate_deploy`` is not walked at execution time.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coordinator_hookspecs.records import HostFunctionRecord
from coordinator_hookspecs.types import (
    DeployRequest,
    Effect,
    ExecutionRequest,
    ResourceInfo,
    Verdict,
)


def optional(obj: object, name: str, base: type) -> Callable[..., Any] | None:
    """``obj``'s own method ``name``, bound; None when ``obj`` lacks it or only inherits the
    no-op default of ``base`` (the caller then skips the call altogether)."""
    method = getattr(obj, name, None)
    if not callable(method):
        return None
    if getattr(method, "__func__", None) is base.__dict__.get(name):
        return None  # the base's default, bound to obj: nothing to call
    return method


def method_or_default(obj: object, name: str, base: type) -> Callable[..., Any]:
    """``obj``'s method ``name`` if it has one, else ``base``'s default bound to ``obj``."""
    method = getattr(obj, name, None)
    if callable(method):
        return method
    return types.MethodType(base.__dict__[name], obj)


class EngineBase:
    """Every optional method of the ``Engine`` protocol with its default; ``execute`` is
    the one a subclass must write."""

    def canonical_code(self, code: Any, source_format: str = "binary") -> Any:
        """Turn a deploy's input (e.g. WAT text) into the canonical bytes that are hashed and
        stored. Default: the input as given (the core refuses anything but bytes)."""
        return code

    def inspect(self, deploy: DeployRequest) -> Mapping[str, Any] | None:
        """Metadata to keep with the resource (e.g. a model's signature), JSON-compatible;
        raise ``InvalidRequest`` for bytes it cannot run. Default: nothing to keep."""
        return None

    def bind_host_functions(self, records: Sequence[HostFunctionRecord]) -> None:
        """Called once with every registered host function. Default: ignored."""

    def health(self) -> bool:
        """False (or raising) takes the engine out of rotation for a while. Default: always
        healthy, and never polled."""
        return True

    def warm_up(self) -> None:
        """Load what the first execution would otherwise pay for (a runtime imported on
        first use, caches). A long-running front end calls it before it reports ready; a
        one-shot command never does. Default: nothing to load."""

    def holds(self, resource_id: str) -> bool:
        """Whether the resource is warm here (compiled, a session open), for affinity
        scheduling. Default: nothing is."""
        return False

    def pool_stats(self) -> Mapping[str, Any] | None:
        """Worker statistics shown under ``metrics()["engines"][name]["workers"]``, for an
        engine that runs executions elsewhere. Default: none."""
        return None

    def model_stats(self) -> Mapping[str, Any] | None:
        """Per-resource statistics shown under ``metrics()["engines"][name]["models"]``, by
        resource id (an ONNX model's batch sizes, queue and compute time), JSON-compatible.
        Read when metrics are read, never per execution. Default: none."""
        return None

    def decode_cli_input(self, data: str | bytes, filename: str | None = None) -> Any:
        """``coordinator exec --input TEXT`` (``data`` a str, ``filename`` None) or
        ``--input-file F`` (bytes, its name) to the request's ``input``. Default: text as
        UTF-8 bytes, a file's bytes as they are."""
        return data.encode() if isinstance(data, str) else data

    def encode_output(self, output: Any) -> Any:
        """A result's output to JSON-compatible data for the CLI. Default: as it is (the CLI
        shows bytes as text or hex)."""
        return output

    def close(self) -> None:
        """Release caches, threads and files when the coordinator closes. Default: nothing."""


class ValidatorBase:
    """The two checks of the ``SecurityValidator`` protocol; override either or both (only
    the ones overridden are ever called)."""

    def validate_deploy(self, deploy: DeployRequest) -> Verdict | None:
        """Admit (None), reject or score a deploy. Default: not consulted."""
        return None

    def validate_execution(self, request: ExecutionRequest, resource: ResourceInfo
                           ) -> Verdict | None:
        """Admit (None), reject or score an execution. Default: not consulted."""
        return None


class QuotaPolicyBase:
    """Optional methods of the ``QuotaPolicy`` protocol (``acquire`` is the one to write)."""

    def release(self, lease: Any, fee_used: int) -> None:
        """Give back what ``acquire`` took. Default: nothing was taken."""

    def may_wait(self) -> bool:
        """Whether ``acquire`` can block until quota frees up (with its configuration as
        loaded). A coordinator with worker processes admits a submitted execution on the
        caller's thread when no policy may wait, and on a queue thread otherwise, so
        ``submit`` never blocks. Default: it may (the safe answer)."""
        return True

    def check(self, request: ExecutionRequest, resource: ResourceInfo) -> None:
        """Raise ``QuotaExceeded`` if ``acquire`` would refuse ``request`` now, taking and
        changing nothing (``Coordinator.simulate`` runs it instead of ``acquire``: a dry run
        consumes no quota). Answer without waiting: a request ``acquire`` would make wait is
        admitted. Default: admitted (a policy without ``check`` never refuses a dry run)."""

    def snapshot(self, caller: str | None = None) -> Mapping[str, Any]:
        """Limits and usage for ``metrics()["quota"]`` and ``coordinator quota status``
        (``caller``: one caller's view, when the policy keeps per-caller counts).
        Default: not reported."""
        return {}


class MetricsSinkBase:
    """Optional methods of the ``MetricsSink`` protocol (``record`` is the one to write)."""

    def snapshot(self) -> Mapping[str, Any]:
        """What the sink has counted, as plain data. Default: nothing."""
        return {}

    def close(self) -> None:
        """Flush and release when the coordinator closes. Default: nothing."""


class AuditSinkBase:
    """Optional methods of the ``AuditSink`` protocol (``emit`` is the one to write)."""

    def close(self) -> None:
        """Flush and release when the coordinator closes. Default: nothing."""


class EffectProcessorBase:
    """The ``EffectProcessor`` protocol with do-nothing steps; override what you stage.

    ``txn_only`` stays False here: the promise that ``prepare`` writes only through ``txn``
    is honoured only where a class declares it itself."""

    txn_only = False

    def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None:
        """Stage ``effects`` (raise to veto the commit). Default: nothing to stage."""

    def commit(self, execution_id: str) -> None:
        """Make staged effects visible. Default: nothing."""

    def rollback(self, execution_id: str) -> None:
        """Drop staged effects. Default: nothing."""


__all__ = [
    "AuditSinkBase",
    "EffectProcessorBase",
    "EngineBase",
    "MetricsSinkBase",
    "QuotaPolicyBase",
    "ValidatorBase",
    "method_or_default",
    "optional",
]
