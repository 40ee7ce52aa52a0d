"""The validator distribution printed in docs/writing-validators.md builds as printed.

The page's ``pyproject.toml`` and module are extracted from the Markdown, built by real pip
(build isolation, the backend the snippet names) into a ``--target`` directory, and the
entry point is loaded from there in a fresh interpreter. The page's files must also equal
the example distribution under tests/fixtures, whose own tests then cover the printed code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-validators.md"
FIXTURE = ROOT / "tests" / "fixtures" / "coordinator-example-validator"
FILES = {
    "pyproject.toml": "`pyproject.toml`, complete",
    "src/coordinator_example_validator/__init__.py":
        "`src/coordinator_example_validator/__init__.py`:",
    "tests/test_entry_guard.py": "`tests/test_entry_guard.py`:",
}


def printed(marker: str) -> str:
    """The first fenced code block after the line that starts with ``marker``."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("\n" + marker) + 1
    block = re.compile(r"^```\w*\n(.*?)^```$", re.MULTILINE | re.DOTALL).search(text, start)
    assert block, f"no code block after {marker!r} in {DOC.name}"
    return block.group(1)


@pytest.mark.parametrize("path", sorted(FILES))
def test_the_page_prints_the_example_distribution(path: str) -> None:
    assert printed(FILES[path]) == (FIXTURE / path).read_text(encoding="utf-8"), (
        f"docs/writing-validators.md and {path} of the example differ")


@pytest.mark.slow
def test_the_printed_distribution_builds_and_its_entry_point_loads(tmp_path: Path) -> None:
    project = tmp_path / "coordinator-example-validator"
    for path, marker in FILES.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(printed(marker), encoding="utf-8")
    (project / "README.md").write_text("# coordinator-example-validator\n")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(project)], check=True, capture_output=True, timeout=300)
    probe = """if True:
        import json
        from importlib.metadata import entry_points
        (point,) = [p for p in entry_points(group="coordinator") if p.name == "example-validator"]
        module = point.load()
        records = module.coordinator_register_validators(config=type(
            "Config", (), {"section": lambda self, name: module.EntryGuardConfig()})())
        print(json.dumps({"dist": point.dist.name, "file": module.__file__,
                          "records": [r.name for r in records]}))
    """
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, check=True, timeout=60)
    loaded = json.loads(done.stdout)
    assert loaded["dist"] == "coordinator-example-validator"
    assert Path(loaded["file"]).is_relative_to(site)
    assert loaded["records"] == ["entry-guard"]
