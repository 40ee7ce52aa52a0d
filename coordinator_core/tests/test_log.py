"""The core's logger imports loguru on first use, and the CLI's handler is installed then.

Each test runs in a fresh interpreter, the only place where loguru is not imported yet.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("first_import", [
    "from coordinator_core.log import logger",  # the core's stand-in, its first message
    "from loguru import logger",  # loguru imported directly, as a plugin may
])
def test_a_configuration_waits_for_loguru_and_runs_before_its_first_message(
        first_import: str) -> None:
    done = _run(
        "import sys\n"
        "from coordinator_core.log import configure_on_import\n"
        "def configure(logger):\n"
        "    logger.remove()\n"
        "    logger.add(sys.stdout, level='WARNING', format='configured {level} {message}')\n"
        "configure_on_import(configure)\n"
        "assert 'loguru' not in sys.modules\n"
        f"{first_import}\n"
        "logger.debug('hidden')\n"
        "logger.warning('shown')\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "configured WARNING shown\n"
    assert done.stderr == ""  # loguru's default handler was removed before any message


def test_configuring_after_loguru_is_imported_applies_at_once() -> None:
    done = _run(
        "import sys\n"
        "import loguru\n"
        "from coordinator_core.log import configure_on_import, logger\n"
        "configure_on_import(lambda lg: (lg.remove(), lg.add(sys.stdout, format='{message}')))\n"
        "logger.info('one')\n"
        "print(sum(type(f).__name__ == '_ConfigureAfterImport' for f in sys.meta_path))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "one\n0\n"


def test_the_stand_in_forwards_to_loguru_and_keeps_what_it_found() -> None:
    from loguru import logger as real

    from coordinator_core.log import logger

    messages: list[str] = []
    handler = real.add(messages.append, level="INFO", format="{name}:{function} {message}")
    try:
        logger.info("via the stand-in")
    finally:
        real.remove(handler)
    assert messages == [f"{__name__}:test_the_stand_in_forwards_to_loguru_and_keeps_what_it_found"
                        " via the stand-in\n"]
    assert vars(logger)["info"] == real.info  # found in the instance dict from now on
