"""How the CLI renders values: readable text as text, anything else as hex."""

from __future__ import annotations

from coordinator_core.cli.output import to_jsonable
from coordinator_hookspecs import Status


def test_bytes_render_as_text_only_when_readable() -> None:
    assert to_jsonable(b"hello\nworld\t!") == "hello\nworld\t!"
    assert to_jsonable(b"") == ""
    assert to_jsonable((7).to_bytes(8, "little")) == {"hex": "0700000000000000"}
    assert to_jsonable(b"\xff\xfe") == {"hex": "fffe"}


def test_containers_and_enums() -> None:
    assert to_jsonable({"s": Status.FAILED, "l": (b"a", frozenset({"x"}))}) == {
        "s": "failed", "l": ["a", ["x"]]}
