"""OpenTelemetry metrics: observable instruments read at collection time::

    from loopscope.exporters.otel import instrument
    loopscope.install()
    instrument()                      # the global MeterProvider
    instrument(meter_provider=mp)     # or a given one

Names follow OpenTelemetry's conventions (dotted, unit in ``unit``, not in
the name).  The OTel API has no asynchronous histogram, and recording every
step synchronously would put the SDK on the loop's hot path, so step
durations are published as percentile gauges (``quantile`` attribute) plus
the busy-time and step counters; Prometheus gets the full histogram.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from ..agent.core import current
from ..agent.health import health_report


def _loops() -> list[dict[str, Any]]:
    agent = current()
    if agent is None:
        return []
    return health_report(agent, top=0)["loops"]


def instrument(meter_provider: Any = None) -> list[Any]:
    """Register loopscope's instruments; returns them (keep a reference)."""
    meter = metrics.get_meter("loopscope", meter_provider=meter_provider)

    def attrs(lp: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"asyncio.loop.thread": lp.get("thread") or "?", **extra}

    def gauge(read: Any) -> Any:
        def cb(_options: CallbackOptions) -> Iterable[Observation]:
            for lp in _loops():
                for value, extra in read(lp):
                    if value is not None:
                        yield Observation(value, attrs(lp, **extra))

        return cb

    made = [
        meter.create_observable_gauge("asyncio.loop.lag", [gauge(lambda lp: [(lp["lag"]["last"], {})])], unit="s", description="How late the loop ran its last lag probe"),
        meter.create_observable_gauge("asyncio.loop.utilization", [gauge(lambda lp: [(lp["utilisation"], {})])], unit="1", description="Fraction of the last second spent running callbacks"),
        meter.create_observable_counter("asyncio.loop.busy_time", [gauge(lambda lp: [(lp["busy"], {})])], unit="s", description="Time spent running callbacks"),
        meter.create_observable_counter("asyncio.loop.steps", [gauge(lambda lp: [(lp["steps"]["count"], {})])], unit="{step}", description="Callbacks run (task steps are context switches)"),
        meter.create_observable_gauge(
            "asyncio.loop.step.duration",
            [gauge(lambda lp: [(lp["steps"][q], {"quantile": q}) for q in ("p50", "p95", "p99", "max")])],
            unit="s",
            description="Step duration percentiles since start",
        ),
        meter.create_observable_counter("asyncio.tasks.created", [gauge(lambda lp: [(lp["tasks"]["created"], {})])], unit="{task}", description="Tasks created"),
        meter.create_observable_counter(
            "asyncio.tasks.finished",
            [gauge(lambda lp: [(lp["tasks"][k], {"asyncio.task.outcome": k}) for k in ("done", "failed", "cancelled", "destroyed_pending")])],
            unit="{task}",
            description="Tasks ended, by outcome",
        ),
        meter.create_observable_up_down_counter("asyncio.tasks.live", [gauge(lambda lp: [(lp["tasks"]["live"], {})])], unit="{task}", description="Tasks created and not yet ended"),
        meter.create_observable_counter("asyncio.loop.blocking_steps", [gauge(lambda lp: [(lp["steps"]["slow_count"], {})])], unit="{step}", description="Steps over the slow-step threshold"),
        meter.create_observable_gauge(
            "asyncio.executor.workers.active",
            [gauge(lambda lp: [(e["active"], {"asyncio.executor": e["name"]}) for e in lp["executors"]])],
            unit="{thread}",
            description="Executor worker threads running a job",
        ),
        meter.create_observable_gauge(
            "asyncio.executor.queue.size",
            [gauge(lambda lp: [(e["queued"], {"asyncio.executor": e["name"]}) for e in lp["executors"]])],
            unit="{job}",
            description="Executor jobs waiting for a worker",
        ),
    ]
    return made
