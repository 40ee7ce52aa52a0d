"""The memory an execution reports: the exported linear memory when the call returned,
which is also its peak (wasm memory never shrinks and every execution has a fresh store)."""

from __future__ import annotations

from typing import Any

PAGE = 65536

#: Grows its memory by the page count given as its argument, then returns the new size.
GROW = """
(module
  (memory (export "memory") 2 64)
  (func (export "grow") (param i32) (result i32)
    (drop (memory.grow (local.get 0)))
    (memory.size)))
"""


def test_grown_memory_reports_pages_at_the_end_and_their_peak(harness: Any) -> None:
    deployed = harness.deploy(GROW)
    result = harness.run(deployed, entry="grow", args=(5,))
    assert result.output == [7]
    assert result.memory_bytes == 7 * PAGE
    assert result.usage == {"memory_pages": 7, "memory_peak_pages": 7}
    # The next execution starts again from the module's two pages: nothing carries over.
    again = harness.run(deployed, entry="grow", args=(0,))
    assert again.output == [2]
    assert again.memory_bytes == 2 * PAGE and again.usage["memory_peak_pages"] == 2


def test_a_refused_growth_leaves_the_size_it_had(harness: Any) -> None:
    deployed = harness.deploy(GROW)
    result = harness.run(deployed, entry="grow", args=(100,))  # over the declared maximum
    assert result.output == [2]
    assert result.memory_bytes == 2 * PAGE


def test_host_functions_and_memory_use_agree(harness: Any) -> None:
    echo = harness.deploy(f"""
(module {harness.IO}
  (memory (export "memory") 3)
  (func (export "main")
    (call $input_read (i32.const 0))
    (call $output_write (i32.const 0) (call $input_len))))
""")
    result = harness.run(echo, input=b"abc")
    assert result.output == b"abc"
    assert result.memory_bytes == 3 * PAGE


def test_a_module_without_an_exported_memory_reports_none(harness: Any) -> None:
    bare = harness.deploy('(module (memory 1) (func (export "main")))')
    result = harness.run(bare)
    assert result.memory_bytes == 0 and result.usage is None
