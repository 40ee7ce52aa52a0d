"""Testing kit for plugin authors: a pytest plugin (entry point ``pytest11``) and a tiny engine.

Fixtures (tox's ``pytest.py`` habit: fresh objects per test, plugins given inline):

``make_coordinator(*plugins, entry_points=False, overrides=None, data_dir=None)``
    Opens a coordinator in a fresh data directory under ``tmp_path`` with the built-ins, the
    given plugins (objects, modules, or module names) and, if asked, every installed entry
    point; closes it at teardown.

``echo_coordinator``
    A coordinator with :class:`EchoEngine` registered, ready to run resources of type
    ``echo``: enough to test a validator, quota policy or sink without a real engine.

``start_together(commands)``
    Starts processes that each print ``ready`` and then wait for a line on stdin, and lets
    them all go at once: for tests of processes racing on one data directory.

Example::

    def test_my_validator_rejects_mallory(make_coordinator):
        coord = make_coordinator(my_plugin, EchoPlugin())
        rid = coord.deploy(b"hello", "echo")
        result = coord.execute(ExecutionRequest(resource_id=rid, caller="mallory"))
        assert result.error.kind == "security_rejected"
"""

from __future__ import annotations

import importlib
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from coordinator_core.coordination.coordinator import Coordinator
from coordinator_hookspecs import (
    ERROR_OF_KIND,
    Effect,
    EffectKind,
    EngineRecord,
    EngineResult,
    ExecutionContext,
    FeeExhausted,
    InvalidRequest,
    hookimpl,
)


class EchoEngine:
    """A real (if trivial) engine for tests, resource type ``echo``.

    Entries: ``echo`` (default) returns the input bytes and charges one fee unit per byte;
    ``write`` stores the input under key ``b"last"`` (a state effect) and emits it as an event;
    ``sleep`` waits ``args[0]`` seconds honouring cancel and deadline, charging 1 fee per ms;
    ``fail`` raises ``ValueError`` (an engine bug, reported as ``engine_error``).
    """

    def __init__(self) -> None:
        self.calls = 0

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        self.calls += 1
        request = ctx.request
        entry = request.entry or "echo"
        data = request.input if isinstance(request.input, bytes) else b""
        if entry == "sleep":
            return self._sleep(ctx, float((request.args or (0.0,))[0]))
        if entry == "fail":
            raise ValueError("the echo engine was asked to fail")
        fee = len(data) + 1
        if fee > ctx.fee_limit:
            raise FeeExhausted(f"needs {fee}, limit {ctx.fee_limit}", fee_used=ctx.fee_limit)
        if entry == "echo":
            return EngineResult(output=data, fee_used=fee)
        if entry == "write":
            rid = ctx.resource.id
            previous = ctx.state_get(b"last")
            return EngineResult(
                output=previous or b"",
                fee_used=fee,
                effects=(
                    Effect(EffectKind.STATE_SET, rid, b"last", data),
                    Effect(EffectKind.EVENT, rid, b"", data),
                ),
            )
        raise InvalidRequest(f"echo engine has no entry {entry!r} (echo, write, sleep, fail)")

    def _sleep(self, ctx: ExecutionContext, seconds: float) -> EngineResult:
        started = time.monotonic()
        end = started + seconds
        while time.monotonic() < end:
            reason = ctx.token.poll()
            if reason is not None:
                used = int((time.monotonic() - started) * 1000)
                raise ERROR_OF_KIND[reason](f"stopped after {used} ms", fee_used=used)
            time.sleep(0.001)
        return EngineResult(output=b"", fee_used=int(seconds * 1000))


class EchoPlugin:
    """Registers an :class:`EchoEngine` (its instance is ``self.engine``)."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.engine = EchoEngine()

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [
            EngineRecord(
                name=self.name,
                engine=self.engine,
                resource_types={"echo"},
                features={"cancel", "deadline"},
            )
        ]


def _resolve(plugin: Any) -> Any:
    return importlib.import_module(plugin) if isinstance(plugin, str) else plugin


@pytest.fixture
def make_coordinator(tmp_path: Path) -> Iterator[Callable[..., Coordinator]]:
    """Factory of coordinators with chosen plugins, each closed at teardown."""
    opened: list[Coordinator] = []

    def make(
        *plugins: Any,
        entry_points: bool = False,
        overrides: Mapping[str, Any] | None = None,
        data_dir: str | Path | None = None,
    ) -> Coordinator:
        coordinator = Coordinator.open(
            data_dir=data_dir or tmp_path / f"coordinator-{len(opened)}",
            plugins=[_resolve(p) for p in plugins],
            entry_points=entry_points,
            overrides=overrides,
        )
        opened.append(coordinator)
        return coordinator

    yield make
    for coordinator in reversed(opened):
        coordinator.close()


@pytest.fixture
def echo_coordinator(make_coordinator: Callable[..., Coordinator]) -> Coordinator:
    """A coordinator with the echo engine (resource type ``echo``) and the built-ins."""
    return make_coordinator(EchoPlugin())


def start_together(commands: Sequence[Sequence[str]]) -> list[subprocess.Popen[str]]:
    """Start ``commands`` (each prints ``ready`` once set up, then reads one line of stdin
    before it starts its real work) and release them at once, so they race for real. Their
    stdout and stderr are pipes: read them with ``communicate``."""
    children = [subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for command in commands]
    for child in children:
        assert child.stdout is not None
        ready = child.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"{_command_text(child)} did not get ready: {ready!r}, "
                               f"{child.communicate(timeout=30)[1][-2000:]}")
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    return children


def _command_text(child: subprocess.Popen[str]) -> str:
    args = child.args
    return " ".join(map(str, args)) if isinstance(args, list) else str(args)
