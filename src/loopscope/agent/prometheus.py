"""Prometheus export without prometheus_client: the text exposition format
(version 0.0.4) served on ``/metrics`` by a small stdlib HTTP server thread.

``families`` is the single description of what is exported (names, types,
help, labels); ``loopscope.exporters.prometheus`` turns the same list into
prometheus_client metric families for apps that already serve metrics.
Names and units follow Prometheus conventions: base units (seconds),
``_total`` on counters, ``_ratio`` for fractions.  Labels are bounded: the
loop's thread name (one per loop) and the executor's name (registered by the
program).  docs/metrics.md has the table.
"""

from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .metrics import cumulative
from .watchdog import live_count

if TYPE_CHECKING:
    from .core import Agent

#: (name, type, help); samples are (suffix, labels, value)
Family = tuple[str, str, str, list[tuple[str, dict[str, str], float]]]


def families(agent: Agent) -> list[Family]:
    """Every exported metric for every loop, read from counters (no task scan)."""
    defs: dict[str, tuple[str, str]] = {
        "asyncio_loop_lag_seconds": ("gauge", "How late the loop ran its last lag probe (a timer due every probe interval)."),
        "asyncio_loop_lag_max_seconds": ("gauge", "Worst lag seen since the agent started."),
        "asyncio_loop_utilization_ratio": ("gauge", "Fraction of the last second the loop spent running callbacks (not waiting for I/O)."),
        "asyncio_loop_busy_seconds_total": ("counter", "Time spent running callbacks."),
        "asyncio_loop_steps_total": ("counter", "Callbacks run by the loop (task steps are context switches)."),
        "asyncio_loop_step_duration_seconds": ("histogram", "Duration of each callback the loop ran."),
        "asyncio_loop_blocking_steps_total": ("counter", "Steps longer than the slow-step threshold."),
        "asyncio_loop_blocked_seconds": ("gauge", "How long the loop has been stuck in its current step (0 when it is not)."),
        "asyncio_tasks_created_total": ("counter", "Tasks created through the loop's task factory."),
        "asyncio_tasks_finished_total": ("counter", "Tasks that ended, by outcome."),
        "asyncio_tasks_live": ("gauge", "Tasks created and not yet ended."),
        "asyncio_executor_workers_max": ("gauge", "An executor's max_workers."),
        "asyncio_executor_workers_active": ("gauge", "Worker threads running a job."),
        "asyncio_executor_queue_size": ("gauge", "Jobs submitted and not yet started."),
    }
    samples: dict[str, list[tuple[str, dict[str, str], float]]] = {k: [] for k in defs}
    for loop, st in agent.loops.states():
        m = st.metrics
        if m is None:
            continue
        lb = {"thread": st.thread_name or "?"}
        samples["asyncio_loop_lag_seconds"].append(("", lb, m.lag_last))
        samples["asyncio_loop_lag_max_seconds"].append(("", lb, m.lag_max))
        util = m.series.utilisation[-1] if m.series.utilisation else None
        if util is not None:
            samples["asyncio_loop_utilization_ratio"].append(("", lb, util))
        samples["asyncio_loop_blocking_steps_total"].append(("", lb, m.slow_count))
        blocked = agent.loops.blocked_for(st) if loop.is_running() else 0.0
        samples["asyncio_loop_blocked_seconds"].append(("", lb, blocked if blocked > m.slow else 0.0))
        if st.hooked:
            buckets = m.buckets()
            total = sum(c for _b, c in buckets)
            samples["asyncio_loop_busy_seconds_total"].append(("", lb, m.busy))
            samples["asyncio_loop_steps_total"].append(("", lb, total))
            h = samples["asyncio_loop_step_duration_seconds"]
            for bound, acc in cumulative(buckets):
                h.append(("_bucket", {**lb, "le": _fmt(bound)}, acc))
            h.append(("_bucket", {**lb, "le": "+Inf"}, total))
            h.append(("_sum", lb, m.busy))
            h.append(("_count", lb, total))
        samples["asyncio_tasks_created_total"].append(("", lb, agent.loops.created_count(loop)))
        for outcome, value in (("done", m.done), ("failed", m.failed), ("cancelled", m.cancelled), ("destroyed_pending", m.destroyed)):
            samples["asyncio_tasks_finished_total"].append(("", {**lb, "outcome": outcome}, value))
        samples["asyncio_tasks_live"].append(("", lb, live_count(agent.loops, loop, m)))
        from .metrics import executor_stats

        execs = []
        default = getattr(loop, "_default_executor", None)
        if default is not None:
            execs.append(("default", default))
        for name, ex in execs + agent.executors.items():
            stats = executor_stats(name, ex)
            if stats is None:
                continue
            el = {**lb, "executor": name}
            samples["asyncio_executor_workers_max"].append(("", el, stats["max_workers"]))
            samples["asyncio_executor_workers_active"].append(("", el, stats["active"]))
            samples["asyncio_executor_queue_size"].append(("", el, stats["queued"]))
    return [(name, tp, help_, samples[name]) for name, (tp, help_) in defs.items()]


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else f"{v:.1f}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(fams: list[Family]) -> str:
    """The text format Prometheus scrapes."""
    out = []
    for name, tp, help_, samples in fams:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {tp}")
        for suffix, labels, value in samples:
            lbl = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            out.append(f"{name}{suffix}{{{lbl}}} {_fmt(float(value))}" if lbl else f"{name}{suffix} {_fmt(float(value))}")
    return "\n".join(out) + "\n"


def parse_address(spec: str) -> tuple[str, int]:
    """``9100`` → (127.0.0.1, 9100); ``0.0.0.0:9100``; ``[::1]:9100``."""
    spec = spec.strip()
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", spec
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"not a port: {port!r} (expected [HOST:]PORT)")
    return host, int(port)


class MetricsServer:
    """``/metrics`` on a daemon thread; each scrape reads the counters."""

    def __init__(self, agent: Agent, spec: str) -> None:
        host, port = parse_address(spec)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    body = exposition(families(outer.agent)).encode()
                except Exception as e:  # noqa: BLE001
                    outer.agent.tracker.note_error(e)
                    self.send_error(500, "loopscope could not read its metrics")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # the program's stderr is not ours to fill

        self.agent = agent
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.address = self.httpd.server_address
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="loopscope-prometheus", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
