"""A prometheus_client collector for programs that already serve metrics::

    from prometheus_client import REGISTRY
    from loopscope.exporters.prometheus import LoopscopeCollector

    loopscope.install()
    REGISTRY.register(LoopscopeCollector())

It publishes the same families as ``loopscope run --prometheus`` (one
definition: ``loopscope.agent.prometheus.families``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..agent.core import current
from ..agent.prometheus import families


class LoopscopeCollector:
    """Reads the agent's counters at scrape time (nothing on the loop)."""

    def collect(self) -> Iterator[Metric]:
        agent = current()
        if agent is None:
            return
        for name, tp, help_, samples in families(agent):
            labelnames = sorted({k for _s, lb, _v in samples for k in lb if k != "le"})
            if tp == "counter":
                fam: Any = CounterMetricFamily(name.removesuffix("_total"), help_, labels=labelnames)
                for _suffix, lb, value in samples:
                    fam.add_metric([lb[k] for k in labelnames], value)
            elif tp == "gauge":
                fam = GaugeMetricFamily(name, help_, labels=labelnames)
                for _suffix, lb, value in samples:
                    fam.add_metric([lb[k] for k in labelnames], value)
            else:
                fam = HistogramMetricFamily(name, help_, labels=labelnames)
                by_series: dict[tuple, dict[str, Any]] = {}
                for suffix, lb, value in samples:
                    key = tuple(lb[k] for k in labelnames)
                    entry = by_series.setdefault(key, {"buckets": [], "sum": 0.0})
                    if suffix == "_bucket":
                        entry["buckets"].append((lb["le"], value))
                    elif suffix == "_sum":
                        entry["sum"] = value
                for key, entry in by_series.items():
                    fam.add_metric(list(key), entry["buckets"], entry["sum"])
            yield fam

    def describe(self) -> list[Metric]:
        return []
