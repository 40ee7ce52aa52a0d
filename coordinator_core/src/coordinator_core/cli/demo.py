"""Built-in plugin: ``coordinator demo``, the main job and a newcomer's first command.

On a fresh data directory (a temporary one unless ``--data-dir`` is given), offline: deploy
the example token contract, the ONNX risk model and the hybrid contract that asks the model
before approving a transfer (``examples/``); run a mixed workload through ``submit`` with a
progress bar on stderr; print a summary (``--json``: as JSON). Exit 0 when the run behaved as
expected (the audit log verifies and every expected outcome was seen), else 1.

The workload is in ``demo_workload.py``, the summary in ``demo_summary.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import coordinator_core
from coordinator_core.cli.output import emit
from coordinator_hookspecs import (
    CliCommand,
    CoordinatorError,
    EngineError,
    InvalidRequest,
    hookimpl,
)

REQUIRED = ("token.wat", "hybrid.wat", "risk_model.onnx")
MIN_EXECUTIONS = 100


def find_examples(explicit: str | None) -> Path:
    """``--examples DIR``, else ``./examples``, else the repository's ``examples/`` next to
    this package's source tree; ``InvalidRequest`` naming every place looked at."""
    if explicit:
        candidates = [Path(explicit)]
    else:
        # coordinator_core/src/coordinator_core/__init__.py -> the repository root
        repo = Path(coordinator_core.__file__).resolve().parents[3]
        candidates = [Path.cwd() / "examples", repo / "examples"]
    for place in candidates:
        if all((place / name).is_file() for name in REQUIRED):
            return place
    raise InvalidRequest(
        f"the demo needs {', '.join(REQUIRED)}; not found in "
        f"{' or '.join(str(p) for p in candidates)} (run from the repository root or pass "
        "--examples DIR)")


class Progress:
    """A plain-text progress bar on a stream: redrawn in place on a terminal, a line per
    10 % otherwise (logs and CI stay readable)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.stream, self.width = total, stream, width
        self.tty = stream.isatty()
        self.started = time.perf_counter()
        self._drawn = 0.0
        self._step = -1

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if self.tty:
            if now - self._drawn >= 0.1:
                self._drawn = now
                self.stream.write("\r" + self._line(done, now))
                self.stream.flush()
        elif done * 10 // max(self.total, 1) > self._step:
            self._step = done * 10 // max(self.total, 1)
            self.stream.write(self._line(done, now) + "\n")

    def finish(self, done: int) -> None:
        if self.tty:
            self.stream.write("\r" + self._line(done, time.perf_counter()) + "\n")
        elif self._step < 10:
            self.stream.write(self._line(done, time.perf_counter()) + "\n")
        self.stream.flush()

    def _line(self, done: int, now: float) -> str:
        share = min(done / max(self.total, 1), 1.0)
        bar = "#" * int(share * self.width)
        rate = done / max(now - self.started, 1e-9)
        return (f"  [{bar:<{self.width}}] {done:>6}/{self.total} {share * 100:5.1f} %  "
                f"{rate:,.0f}/s")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executions", type=int, default=3000, metavar="N",
                        help=f"executions in the workload (default 3000, at least "
                             f"{MIN_EXECUTIONS})")
    parser.add_argument("--examples", metavar="DIR",
                        help="where token.wat, hybrid.wat and risk_model.onnx are "
                             "(default ./examples, else the repository's)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the workload's order")


def _run(args: argparse.Namespace, _open_coordinator: Any) -> int:
    if args.executions < MIN_EXECUTIONS:
        raise InvalidRequest(f"--executions must be at least {MIN_EXECUTIONS} (so every kind "
                             f"of outcome occurs), got {args.executions}")
    examples = find_examples(args.examples)
    if args.data_dir:
        return _demo(args, examples, Path(args.data_dir), temporary=False)
    with tempfile.TemporaryDirectory(prefix="coordinator-demo-") as tmp:
        return _demo(args, examples, Path(tmp), temporary=True)


def _demo(args: argparse.Namespace, examples: Path, data_dir: Path, temporary: bool) -> int:
    # Imported here: every command loads this plugin, only ``demo`` needs them.
    from coordinator_core.cli import demo_summary, demo_workload
    from coordinator_core.coordination.coordinator import Coordinator

    recorder = demo_summary.StageRecorder()
    out = sys.stderr
    with Coordinator.open(args.config, data_dir=data_dir, overrides=demo_workload.OVERRIDES,
                          plugins=[recorder]) as coord:
        for kind in ("wasm", "onnx"):
            try:
                coord.engine_for(kind)
            except CoordinatorError as exc:
                raise EngineError(
                    f"the demo needs the WASM and ONNX engines (pip install "
                    f"coordinator-engine-wasmtime coordinator-engine-onnxruntime): {exc.message}"
                ) from None
        print(f"coordinator demo: data in {data_dir}{' (temporary)' if temporary else ''}",
              file=out)
        world = demo_workload.setup(coord, examples)
        items = demo_workload.plan(world, args.executions, args.seed)
        print(f"deployed token {world.token[:12]}, hybrid {world.hybrid[:12]}, model "
              f"{world.model[:12]}; running {len(items) + 1} executions", file=out)
        tally = demo_workload.run(coord, world, items, Progress(len(items) + 1, out))
        summary = demo_summary.build(coord, world, tally, recorder, str(data_dir),
                                     str(examples))
    summary["data_dir_kept"] = not temporary
    if args.json:
        emit(summary)
    else:
        print_summary(summary)
    return 0 if summary["ok"] else 1


def print_summary(s: dict[str, Any]) -> None:
    """The summary as readable text on stdout."""
    print(f"\n{s['executions']:,} executions in {s['seconds']:.2f} s "
          f"({s['throughput_per_s']:,.0f}/s through submit, with durable commits)")
    print("\nstatus            count      error kind            count")
    kinds = sorted(s["by_error_kind"].items(), key=lambda kv: -kv[1])
    statuses = sorted(s["by_status"].items(), key=lambda kv: -kv[1])
    for i in range(max(len(kinds), len(statuses))):
        left = f"{statuses[i][0]:<16}{statuses[i][1]:>7}" if i < len(statuses) else " " * 23
        right = f"{kinds[i][0]:<20}{kinds[i][1]:>7}" if i < len(kinds) else ""
        print(f"{left}      {right}")
    nested = s["nested"]
    print(f"nested (hybrid)   {nested['executions']:>5}  "
          + ", ".join(f"{k} {v}" for k, v in nested["by_status"].items()))
    print("\nscenario                             outcomes")
    for name, counts in s["scenarios"].items():
        print(f"{name:<36} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"\n{'SPEC.md operation':<24}{'p50 ms':>9}{'p99 ms':>9}{'target':>10}   measured as")
    for row in s["spec_targets"]:
        verdict = "met" if row["met"] else "MISSED"
        print(f"{row['operation']:<24}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
              f"{'< ' + format(row['target_ms'], 'g') + ' ms':>10} {verdict:<6} "
              f"{row['measured_as']}")
    print(f"\n{'stage':<24}{'count':>7}{'p50 ms':>9}{'p99 ms':>9}")
    for name, h in s["stages"].items():
        print(f"{name:<24}{h['count']:>7}{h['p50_ms']:>9.3f}{h['p99_ms']:>9.3f}")
    print(f"\nfee used          {s['fee_used']:,} (top-level executions, nested fees included)")
    for name, e in s["engines"].items():
        print(f"engine {name:<11}{e['executions']:>6} executions ({e['share'] * 100:.1f} %), "
              f"busy {e['busy_seconds']:.2f} s, utilisation {e['utilisation'] * 100:.1f} %")
    for contract, values in s["balances"].items():
        print(f"balances {contract:<8} " + ", ".join(f"{k} {v:,}" for k, v in values.items()))
    for contract, events in s["events"].items():
        shown = "; ".join(json.dumps(e) if "raw" in e else
                          f"{e['kind']} {e['amount']:,} {e['from']} -> {e['to']}" for e in events)
        print(f"events   {contract:<8} {shown}")
    v = s["audit_verify"]
    print(f"audit verify      {'ok' if v['ok'] else 'FAILED'}: {v['count']:,} records, "
          f"head {v['head'][:16]}" + ("" if v["ok"] else f" (seq {v['first_bad_seq']}: "
                                      f"{v['reason']})"))
    print()
    for check in s["checks"]:
        print(f"[{'ok' if check['ok'] else 'FAILED':>6}] {check['check']}: {check['detail']}")
    print(f"\ndemo {'OK' if s['ok'] else 'FAILED'}")


@hookimpl
def coordinator_register_cli_commands() -> list[CliCommand]:
    return [CliCommand("demo", "deploy the examples and run a mixed workload, with a summary",
                       _arguments, _run)]
