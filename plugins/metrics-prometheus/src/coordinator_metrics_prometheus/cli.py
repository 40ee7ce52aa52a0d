"""``coordinator serve-metrics``: serve the data directory's metrics to Prometheus.

A separate process sees no in-process executions, so the endpoint it serves is rebuilt from
the audit log every execution leaves (``auditlog.py``): it counts the executions of every
process that uses the data directory, including ones that ran before it started.
"""

from __future__ import annotations

import argparse
import json
import time

from coordinator_hookspecs import CliCommand, CoordinatorOpener

DEFAULT_PORT = 9464  # the port Prometheus' registry of default ports gives exporters like this


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None,
                        help=f"port to serve on (default: [prometheus] port, else {DEFAULT_PORT})")
    parser.add_argument("--addr", default=None,
                        help="address to bind (default: [prometheus] addr, 127.0.0.1)")
    parser.add_argument("--once", action="store_true",
                        help="print the metrics once (text exposition format) and exit")


def _run(args: argparse.Namespace, open_coordinator: CoordinatorOpener) -> int:
    # Imported here: every ``coordinator`` command registers this one, few run it.
    from prometheus_client import CollectorRegistry, generate_latest

    from coordinator_metrics_prometheus.auditlog import AuditLogCollector
    from coordinator_metrics_prometheus.plugin import SECTION, sinks_of
    from coordinator_metrics_prometheus.server import MetricsServer

    with open_coordinator() as coordinator:
        settings = coordinator.config.section(SECTION)
        registry = CollectorRegistry()
        registry.register(AuditLogCollector(coordinator, settings.buckets))
        if args.once:
            text = generate_latest(registry).decode()
            if args.json:
                print(json.dumps([
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for family in registry.collect() for s in family.samples
                ], indent=2))
            else:
                print(text, end="")
            return 0
        for sink in sinks_of(coordinator):  # this command's endpoint replaces the sink's
            sink.stop_server()
        server = MetricsServer(registry, args.addr or settings.addr,
                               args.port or settings.port or DEFAULT_PORT)
        print(json.dumps({"url": server.url}) if args.json else
              f"serving {server.url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
        finally:
            server.stop()


SERVE_METRICS = CliCommand(
    name="serve-metrics",
    help="serve Prometheus metrics of every execution in the data directory",
    add_arguments=_add_arguments,
    run=_run,
)
