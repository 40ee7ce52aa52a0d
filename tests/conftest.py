"""Fixtures of the integration tests: everything installed, real entry points."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ECHO_WAT, run_cli


@pytest.fixture
def echo_wat(tmp_path: Path) -> Path:
    path = tmp_path / "echo.wat"
    path.write_text(ECHO_WAT)
    return path


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli
