"""`make bench`: run every ``bench/bench_*.py`` module, print one table, write results.md.

Each module's ``run(table)`` adds rows (see ``harness.py``); a module that fails to import or
raises is reported as a row of the table and the others still run. A module may also define
``READING``, Markdown that explains how to read its rows; it is written after the tables.
The table is printed grouped by section and written to ``bench/results.md`` with the date,
the machine's core count and load, and the Python, wasmtime and onnxruntime versions, because
absolute numbers only mean something next to the machine that produced them (compare
ratios across runs).

Usage: ``.venv/bin/python bench/run.py [--only core,parallel]`` from the repository root
(``--only http``: the network service's rows alone).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _format(value: float) -> str:
    if value != value:  # NaN: the module reported nothing measurable
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


def render(table: Any, elapsed: dict[str, float], readings: tuple[str, ...] = ()) -> str:
    """The rows as Markdown tables, one per section, in the order sections first appear."""
    sections: dict[str, list[Any]] = {}
    for row in table.rows:
        sections.setdefault(row.section, []).append(row)
    out: list[str] = []
    for section, items in sections.items():
        out += [f"### {section}", "", "| measurement | value | unit | target | verdict | note |",
                "|---|---:|---|---|---|---|"]
        for r in items:
            out.append(f"| {r.name} | {_format(r.value)} | {r.unit} | {r.target} | "
                       f"{r.verdict} | {r.note} |")
        out.append("")
    for text in readings:
        out += [text.strip(), ""]
    out += ["### time per module", "", "| module | seconds |", "|---|---:|"]
    out += [f"| {name} | {seconds:.1f} |" for name, seconds in elapsed.items()]
    return "\n".join(out) + "\n"


def header() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return "\n".join([
        "# Benchmark results (`make bench`)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} cores ({platform.machine()}, {platform.system()} "
        f"{platform.release()}); load average at start {load} (shared machine: read ratios)",
        f"- Python {platform.python_version()}, wasmtime {_version('wasmtime')}, onnxruntime "
        f"{_version('onnxruntime')}, prometheus_client {_version('prometheus_client')}",
        "",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated modules (core,parallel)")
    parser.add_argument("--output", default=str(BENCH / "results.md"))
    args = parser.parse_args(argv)
    # The repository root makes ``bench.harness`` and ``bench.bench_*`` importable here and in
    # the worker processes the process-pool benchmarks spawn (they inherit sys.path).
    sys.path.insert(0, str(ROOT))
    from loguru import logger

    from bench.harness import Table

    logger.remove()  # an application decides logging; keep the table readable
    logger.add(sys.stderr, level="WARNING", format="{level}: {message}")
    wanted = {f"bench_{name.strip()}" for name in args.only.split(",") if name.strip()}
    names = sorted(p.stem for p in BENCH.glob("bench_*.py"))
    table = Table()
    started = header()
    elapsed: dict[str, float] = {}
    readings: list[str] = []
    for name in names:
        if wanted and name not in wanted:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            module.run(table)
            if isinstance(getattr(module, "READING", None), str):
                readings.append(module.READING)
        except Exception as exc:
            traceback.print_exc()
            table.add(name.removeprefix("bench_"), f"{name} FAILED", float("nan"), "",
                      ok=False, note=f"{type(exc).__name__}: {exc}"[:300].replace("|", "/"))
        elapsed[name] = time.perf_counter() - t0
    text = render(table, elapsed, tuple(readings))
    print(text)
    Path(args.output).write_text(started + text, encoding="utf-8")
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
