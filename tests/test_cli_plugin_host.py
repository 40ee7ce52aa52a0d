"""The CLI as a user meets it: plugins loaded once per command, ``plugins`` diagnosing
clashes, ``config show`` printing every section, warnings for misspelled sections.

Plugin distributions are real: a dist-info directory with an ``entry_points.txt`` on the
``PYTHONPATH`` of the ``coordinator`` subprocess, found by ``importlib.metadata``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import run_cli

SAME_NAME = '''
from coordinator_hookspecs import ValidatorRecord, hookimpl

class Allow:
    def validate_execution(self, request, resource):
        return None

@hookimpl
def coordinator_register_validators(config):
    return [ValidatorRecord(name="same-name", validator=Allow())]
'''

RAISING_HOOK = '''
from coordinator_hookspecs import hookimpl

@hookimpl
def coordinator_register_validators(config):
    raise RuntimeError("policy server unreachable")
'''


def _dists(root: Path, **modules: str) -> dict[str, str]:
    """Distributions ``coordinator-<name>`` with entry point ``<name>`` = module source;
    returns the environment that makes the CLI see them."""
    root.mkdir()
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
        info = root / f"coordinator_{name}-2.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: coordinator-{name}\nVersion: 2.0\n"
        )
        (info / "entry_points.txt").write_text(f"[coordinator]\n{name} = {name}\n")
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def test_config_show_prints_every_section_as_text(tmp_path: Path) -> None:
    done = run_cli("config", "show", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "[coordinator]" in out and "[store]" in out and "[dispatch]" in out
    # a set-valued setting prints as a JSON list, e.g. state_capabilities or an allowlist
    assert 'state_capabilities = ["storage"]' in out


def test_plugins_shows_both_providers_of_one_name(tmp_path: Path) -> None:
    env = _dists(tmp_path / "dists", first=SAME_NAME, second=SAME_NAME)
    done = run_cli("plugins", data_dir=tmp_path / "data", env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "same-name [first] CONFLICT" in done.stdout
    assert "same-name [second] CONFLICT" in done.stdout
    assert "problem: duplicate validator name 'same-name': registered by plugin first and by " \
           "plugin second" in done.stdout
    done = run_cli("plugins", "--json", data_dir=tmp_path / "data", env=env)
    data = json.loads(done.stdout)
    assert [c["plugins"] for c in data["conflicts"]] == [["first", "second"]]
    rows = [v for v in data["records"]["validators"] if v["name"] == "same-name"]
    assert {r["plugin"] for r in rows} == {"first", "second"} and all(r["conflict"] for r in rows)


def test_a_command_opening_a_coordinator_refuses_the_clash(tmp_path: Path) -> None:
    env = _dists(tmp_path / "dists", first=SAME_NAME, second=SAME_NAME)
    done = run_cli("metrics", data_dir=tmp_path / "data", env=env)
    assert done.returncode == 1
    assert "same-name" in done.stderr and "first" in done.stderr and "second" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_failing_plugin_warns_once_per_command(tmp_path: Path) -> None:
    env = _dists(
        tmp_path / "dists",
        broken_import="raise ImportError('needs libfoo')\n",
        raising_hook=RAISING_HOOK,
    )
    for command in (["plugins"], ["metrics"], ["config", "show"]):
        done = run_cli(*command, data_dir=tmp_path / "data", env=env)
        assert done.returncode == 0, (command, done.stderr)
        lines = done.stderr.splitlines()
        assert len([line for line in lines if "broken_import" in line]) == 1, (command, lines)
        assert len([line for line in lines if "raising_hook" in line]) == 1, (command, lines)


def test_a_misspelled_section_variable_is_warned_on_stderr(tmp_path: Path) -> None:
    done = run_cli(
        "metrics", data_dir=tmp_path, env={"COORDINATOR_STOER__DURABILITY": "full"}
    )
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "COORDINATOR_STOER__DURABILITY" in line]
    assert len(warned) == 1 and "did you mean [store]" in warned[0]


def test_help_loads_neither_the_pipeline_nor_the_store() -> None:
    """``--help`` needs the plugins' sub-commands only: the coordinator itself (pipeline,
    resources) is imported when a command opens one."""
    code = (
        "import contextlib, io, json, sys\n"
        "from coordinator_core.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(json.loads(done.stdout))
    assert "coordinator_core.cli.core_commands" in modules  # the sub-commands were loaded
    assert "coordinator_core.coordination.coordinator" not in modules
    assert "coordinator_core.execution.pipeline" not in modules


def test_a_required_plugin_that_failed_stops_commands_and_plugins_says_why(tmp_path: Path) -> None:
    env = _dists(tmp_path / "dists", guard="def broken(:\n")
    env["COORDINATOR_REQUIRED_PLUGINS"] = "guard"
    done = run_cli("metrics", data_dir=tmp_path / "data", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "required plugin 'guard' from coordinator-guard failed to load: SyntaxError" in (
        done.stderr
    )
    done = run_cli("plugins", data_dir=tmp_path / "data", env=env)
    assert done.returncode == 1
    assert "problem: required plugin 'guard'" in done.stdout


SAME_COMMAND = '''
from coordinator_hookspecs import CliCommand, hookimpl

@hookimpl
def coordinator_register_cli_commands():
    return [CliCommand("hello", "say hello", lambda parser: None, lambda args, open_: 0)]
'''


def test_two_plugins_with_one_cli_command_name_are_diagnosed(tmp_path: Path) -> None:
    env = _dists(tmp_path / "dists", cmd_a=SAME_COMMAND, cmd_b=SAME_COMMAND)
    done = run_cli("plugins", data_dir=tmp_path / "data", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "problem: duplicate CLI command name 'hello': registered by plugin cmd_a and by " \
           "plugin cmd_b" in done.stdout
    done = run_cli("hello", data_dir=tmp_path / "data", env=env)  # the first keeps the name
    assert done.returncode == 0, done.stderr
