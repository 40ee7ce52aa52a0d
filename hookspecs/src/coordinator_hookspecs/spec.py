"""The pluggy hook specifications of the coordinator.

Registration hooks run **once** when a coordinator opens; each returns a list of typed
records (or None). The core collects them, refuses duplicate names, applies config and
freezes tuples, so no hook is called per execution. Lifecycle hooks are broadcast and rare.

Every hook is documented in ``docs/hooks.md`` (a test fails when one is not).
"""

from __future__ import annotations

import pluggy

from coordinator_hookspecs.records import (
    AuditSinkRecord,
    CliCommand,
    ConfigSection,
    EffectProcessorRecord,
    EngineRecord,
    ExecutorRecord,
    HostFunctionRecord,
    MetricsSinkRecord,
    QuotaPolicyRecord,
    ValidatorRecord,
)
from coordinator_hookspecs.view import CoordinatorConfig, CoordinatorView

PROJECT_NAME = "coordinator"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def coordinator_register_config_sections() -> list[ConfigSection] | None:
    """Declare the plugin's config section(s).

    The section ``[name]`` of the config file (and ``COORDINATOR_<NAME>__<KEY>`` environment
    variables) is structured into the attrs class with unknown keys refused; registration
    hooks then read it with ``config.section(name)``.

    Example::

        @attrs.frozen
        class GreeterConfig:
            greeting: str = "hello"

        @hookimpl
        def coordinator_register_config_sections():
            return [ConfigSection(name="greeter", type=GreeterConfig)]

    :return: a list of :class:`ConfigSection`, or None.
    """


@hookspec
def coordinator_register_engines(config: CoordinatorConfig) -> list[EngineRecord] | None:
    """Register execution engines.

    Example::

        class EchoEngine:
            def execute(self, ctx):
                return EngineResult(output=ctx.request.input, fee_used=1)

        @hookimpl
        def coordinator_register_engines(config):
            return [EngineRecord(name="echo", engine=EchoEngine(), resource_types={"echo"})]

    :param config: the effective configuration (:class:`CoordinatorConfig`).
    :return: a list of :class:`EngineRecord`, or None.
    """


@hookspec
def coordinator_register_validators(config: CoordinatorConfig) -> list[ValidatorRecord] | None:
    """Register security validators (deploy-time, execution-time, or both).

    Example::

        class NoMallory:
            def validate_execution(self, request, resource):
                if request.caller == "mallory":
                    return Verdict.reject("mallory may not execute anything")
                return None

        @hookimpl
        def coordinator_register_validators(config):
            return [ValidatorRecord(name="no-mallory", validator=NoMallory(), priority=10,
                                    cacheable=True)]

    :param config: the effective configuration.
    :return: a list of :class:`ValidatorRecord`, or None.
    """


@hookspec
def coordinator_register_quota_policies(
    config: CoordinatorConfig,
) -> list[QuotaPolicyRecord] | None:
    """Register quota policies.

    Example::

        class OneAtATime:
            def __init__(self):
                self._lock = threading.Lock()

            def acquire(self, request, resource, deadline):
                if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise QuotaExceeded("one execution at a time", source="one-at-a-time")

            def release(self, lease, fee_used):
                self._lock.release()

        @hookimpl
        def coordinator_register_quota_policies(config):
            return [QuotaPolicyRecord(name="one-at-a-time", policy=OneAtATime())]

    :param config: the effective configuration.
    :return: a list of :class:`QuotaPolicyRecord`, or None.
    """


@hookspec
def coordinator_register_metrics_sinks(config: CoordinatorConfig) -> list[MetricsSinkRecord] | None:
    """Register metrics sinks; each gets an ``ExecutionReport`` per finished execution.

    Example::

        class CountingSink:
            def __init__(self):
                self.by_status = collections.Counter()

            def record(self, report):
                self.by_status[report.result.status.value] += 1

        @hookimpl
        def coordinator_register_metrics_sinks(config):
            return [MetricsSinkRecord(name="counting", sink=CountingSink())]

    :param config: the effective configuration.
    :return: a list of :class:`MetricsSinkRecord`, or None.
    """


@hookspec
def coordinator_register_audit_sinks(config: CoordinatorConfig) -> list[AuditSinkRecord] | None:
    """Register audit sinks; each gets every ``AuditRecord`` after it is committed.

    Example::

        class PrintSink:
            def emit(self, record):
                print(record.seq, record.record_kind, record.status)

        @hookimpl
        def coordinator_register_audit_sinks(config):
            return [AuditSinkRecord(name="print", sink=PrintSink())]

    :param config: the effective configuration.
    :return: a list of :class:`AuditSinkRecord`, or None.
    """


@hookspec
def coordinator_register_effect_processors(
    config: CoordinatorConfig,
) -> list[EffectProcessorRecord] | None:
    """Register effect processors for effect kinds (prepare/commit/rollback).

    Example::

        class Outbox:
            def __init__(self):
                self.staged, self.sent = {}, []

            def prepare(self, execution_id, effects, txn):
                self.staged[execution_id] = [e.value for e in effects]

            def commit(self, execution_id):
                self.sent.extend(self.staged.pop(execution_id))

            def rollback(self, execution_id):
                self.staged.pop(execution_id, None)

        @hookimpl
        def coordinator_register_effect_processors(config):
            return [EffectProcessorRecord(name="outbox", processor=Outbox(), kinds={"mail"})]

    :param config: the effective configuration.
    :return: a list of :class:`EffectProcessorRecord`, or None.
    """


@hookspec
def coordinator_register_host_functions(
    config: CoordinatorConfig,
) -> list[HostFunctionRecord] | None:
    """Register host functions guests may import (if granted the capability).

    Example::

        def double(call, x):
            call.charge(10)
            return x * 2

        @hookimpl
        def coordinator_register_host_functions(config):
            return [HostFunctionRecord(name="double", capability="math", func=double,
                                       params=("i64",), results=("i64",))]

    :param config: the effective configuration.
    :return: a list of :class:`HostFunctionRecord`, or None.
    """


@hookspec
def coordinator_register_executors(config: CoordinatorConfig) -> list[ExecutorRecord] | None:
    """Register executors: where engines run (``[dispatch] executor`` names one).

    The core registers ``threads`` (engines run on the coordinator's threads) and
    ``processes`` (a pool of worker processes); a plugin adds others, e.g. a cluster.
    What an executor works with is in ``coordinator_hookspecs.executors``: the picklable
    ``EngineRecipe`` its workers rebuild the engines from, and the ``RemoteEngines`` backend
    it hands back.

    Example::

        def install(coordinator):
            names = tuple(b.name for b in coordinator.dispatcher.engines)
            workers = RemoteWorkers(coordinator.engine_recipe(names))  # a RemoteEngines
            coordinator.run_engines_on(names, workers, capacity=workers.capacity,
                                       executor="remote")
            return names

        @hookimpl
        def coordinator_register_executors(config):
            return [ExecutorRecord(name="remote", install=install)]

    :param config: the effective configuration.
    :return: a list of :class:`ExecutorRecord`, or None.
    """


@hookspec
def coordinator_register_cli_commands() -> list[CliCommand] | None:
    """Add sub-commands to the ``coordinator`` CLI.

    Example::

        def add_arguments(parser):
            parser.add_argument("rid")

        def run(args, open_coordinator):
            with open_coordinator() as coord:  # a CoordinatorView
                print(coord.resource(args.rid).name)
            return 0

        @hookimpl
        def coordinator_register_cli_commands():
            return [CliCommand(name="name-of", help="print a resource's name",
                               add_arguments=add_arguments, run=run)]

    :return: a list of :class:`CliCommand`, or None.
    """


@hookspec
def coordinator_configure(config: CoordinatorConfig) -> None:
    """Called once with the effective configuration, before any registration hook.

    Example::

        @hookimpl
        def coordinator_configure(config):
            logger.info("data lives in {}", config.data_dir)
    """


@hookspec
def coordinator_startup(coordinator: CoordinatorView) -> None:
    """Called once after the pipeline is frozen and before the first execution.

    ``coordinator`` is a :class:`CoordinatorView`: the public API plus what it registered
    (``registered(kind)``) and its audit log (``audit_records(start)``).

    Example::

        @hookimpl
        def coordinator_startup(coordinator):
            coordinator.metrics()  # warm anything the plugin needs
    """


@hookspec
def coordinator_shutdown(coordinator: CoordinatorView) -> None:
    """Called once when the coordinator closes, after the last execution finished.

    Example::

        @hookimpl
        def coordinator_shutdown(coordinator):
            my_connection.close()
    """
