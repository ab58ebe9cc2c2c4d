"""Metrics export against known workloads: the ``--prometheus`` endpoint of a
real program, the prometheus_client collector and the OpenTelemetry
instruments in this process.

The workload (tests/scenarios/prom_workload.py, and ``_workload`` below for
the in-process exporters): main creates N tasks that finish, then a task
"blocker" whose one step blocks the loop for 200 ms.  So: created N + 2
(main, the N, blocker), done N + 1, live 1 (main), exactly one step in
(100 ms, 250 ms], one blocking step, and a lag probe at least 150 ms late
(it is due at most one 50 ms heartbeat after the block began).
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
import urllib.error
import urllib.request

import pytest
from conftest import wait_until

import loopscope

N = 300
BLOCK = 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> tuple[dict[tuple[str, frozenset], float], dict[str, str]]:
    """Samples keyed by (sample name, labels) and the TYPE of each family.

    Uses prometheus_client's parser when it is installed (it validates the
    format); a strict line parser otherwise (the 3.14/3.15 CI venvs).
    """
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, tp = line.split(" ", 3)
            types[name] = tp
    samples: dict[tuple[str, frozenset], float] = {}
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            samples[(m.group(1), labels)] = float(m.group(3))
        return samples, types
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples, types


def value(samples, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(k for k in samples if k[0].startswith(name))}"
    return samples[key]


def check_workload_samples(samples, types, thread="MainThread"):
    """The known workload, read from one scrape."""
    lb = {"thread": thread}
    assert value(samples, "asyncio_tasks_created_total", **lb) == N + 2
    assert value(samples, "asyncio_tasks_finished_total", outcome="done", **lb) == N + 1
    for outcome in ("failed", "cancelled", "destroyed_pending"):
        assert value(samples, "asyncio_tasks_finished_total", outcome=outcome, **lb) == 0
    assert value(samples, "asyncio_tasks_live", **lb) == 1
    h = "asyncio_loop_step_duration_seconds"
    le_01 = value(samples, h + "_bucket", le="0.1", **lb)
    le_025 = value(samples, h + "_bucket", le="0.25", **lb)
    assert le_025 - le_01 == 1, (le_01, le_025)
    count = value(samples, h + "_count", **lb)
    assert value(samples, h + "_bucket", le="+Inf", **lb) == count
    assert value(samples, h + "_bucket", le="10.0", **lb) == count
    assert count == value(samples, "asyncio_loop_steps_total", **lb)
    assert count >= 2 * N  # each of the N ran two steps
    # buckets are cumulative
    les = sorted(
        (float(dict(k[1])["le"]), v) for k, v in samples.items() if k[0] == h + "_bucket" and dict(k[1]).get("thread") == thread
    )
    assert [b for b, _v in les][:3] == [1e-5, 2.5e-5, 5e-5] and les[-1][0] == math.inf
    assert all(a[1] <= b[1] for a, b in zip(les, les[1:])), les
    busy = value(samples, "asyncio_loop_busy_seconds_total", **lb)
    assert math.isclose(value(samples, h + "_sum", **lb), busy)
    assert busy >= BLOCK
    assert value(samples, "asyncio_loop_blocking_steps_total", **lb) == 1
    assert value(samples, "asyncio_loop_lag_max_seconds", **lb) >= BLOCK - 0.05
    assert value(samples, "asyncio_loop_lag_seconds", **lb) >= 0
    assert value(samples, "asyncio_loop_blocked_seconds", **lb) == 0
    assert types[h] == "histogram"
    assert types.get("asyncio_loop_lag_seconds") == "gauge"


# -- 3. loopscope run --prometheus -------------------------------------------------------


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), ""


def test_prometheus_endpoint_known_workload(ls):
    port = free_port()
    prog = ls.start_ready("prom_workload.py", run_opts=("--prometheus", f"127.0.0.1:{port}"))
    status, ctype, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    samples, types = parse_exposition(text)
    lp = ls.ok("health", prog.pid, "--json").json()["loops"][0]
    slow = [(e["duration"], e["task"], e["stack"][:2]) for e in lp["blocking"]]
    assert len(slow) == 1, f"expected one blocking step (the blocker's), got {slow}"
    check_workload_samples(samples, types)
    # every family has HELP and TYPE
    for name in types:
        assert f"# HELP {name} " in text
    assert types["asyncio_tasks_created_total"] == "counter"
    # another path: 404, the program is unaffected
    assert _get(f"http://127.0.0.1:{port}/other")[0] == 404
    assert prog.alive()
    # the blocking step is the same one health shows
    (entry,) = lp["blocking"]
    assert entry["task"]["name"] == "blocker" and BLOCK <= entry["duration"] < 0.25


def test_prometheus_port_taken_warns_and_program_runs(ls):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        prog = ls.start_ready("prom_workload.py", run_opts=("--prometheus", f"127.0.0.1:{port}"))
        line = prog.stderr.wait_line(lambda s: "Prometheus" in s, timeout=5)
        assert line.startswith(f"loopscope: Prometheus endpoint not started on '127.0.0.1:{port}': "), line
        assert "in use" in line, line
        assert "Traceback" not in prog.stderr.text
        assert prog.alive()
        # the rest of the agent works
        lp = ls.ok("health", prog.pid, "--json").json()["loops"][0]
        assert lp["tasks"]["created"] == N + 2


def test_prometheus_bad_address_warns(ls):
    prog = ls.start_ready("prom_workload.py", run_opts=("--prometheus", "127.0.0.1:notaport"))
    line = prog.stderr.wait_line(lambda s: "Prometheus" in s, timeout=5)
    assert line.startswith("loopscope: Prometheus endpoint not started on '127.0.0.1:notaport': "), line
    assert prog.alive()


# -- in-process exporters ------------------------------------------------------------------


async def _workload(collect):
    async def ok(i):
        await asyncio.sleep(0)
        return i

    async def blocker():
        time.sleep(BLOCK)

    await asyncio.gather(*[asyncio.create_task(ok(i)) for i in range(N)])
    await asyncio.sleep(0.1)
    await asyncio.create_task(blocker(), name="blocker")
    await asyncio.sleep(0.1)
    return collect()


def _installed(**kw):
    import loopscope

    return loopscope.installed(server=False, dump_signal="", **kw)


def test_prometheus_client_collector_known_workload():
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from loopscope.agent.core import current
    from loopscope.agent.prometheus import exposition, families
    from loopscope.exporters.prometheus import LoopscopeCollector

    reg = CollectorRegistry()
    reg.register(LoopscopeCollector())

    def collect():
        return generate_latest(reg).decode(), exposition(families(current())), loopscope.health()

    with _installed():
        text, ours, health = asyncio.run(_workload(collect))
    slow = [(e["duration"], e["task"], e["stack"][:3]) for e in health["loops"][0]["blocking"]]
    assert len(slow) == 1, f"expected one blocking step (the blocker's), got {slow}"
    samples, types = parse_exposition(text)
    check_workload_samples(samples, types)
    # the same families, with the same types, as the --prometheus endpoint
    ours_samples, ours_types = parse_exposition(ours)
    assert types == ours_types
    assert {k[0] for k in samples} == {k[0] for k in ours_samples}
    # nothing after uninstall (no agent: no families)
    assert generate_latest(reg).decode() == ""


def _otel_points(reader):
    out = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = (m.unit, [(dict(p.attributes), p.value) for p in m.data.data_points])
    return out


def test_otel_instruments_known_workload():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from loopscope.exporters.otel import instrument

    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    try:
        with _installed():
            made = instrument(meter_provider=mp)
            assert len(made) >= 10
            got = asyncio.run(_workload(lambda: _otel_points(reader)))
    finally:
        mp.shutdown()
    th = {"asyncio.loop.thread": "MainThread"}

    def one(name, unit):
        u, points = got[name]
        assert u == unit, (name, u)
        assert len(points) == 1, (name, points)
        assert points[0][0] == th, points
        return points[0][1]

    assert one("asyncio.tasks.created", "{task}") == N + 2
    _u, fin = got["asyncio.tasks.finished"]
    assert _u == "{task}"
    by = {p[0]["asyncio.task.outcome"]: p[1] for p in fin}
    assert by == {"done": N + 1, "failed": 0, "cancelled": 0, "destroyed_pending": 0}
    assert all(p[0]["asyncio.loop.thread"] == "MainThread" for p in fin)
    assert one("asyncio.tasks.live", "{task}") == 1
    assert one("asyncio.loop.lag", "s") >= 0
    assert one("asyncio.loop.busy_time", "s") >= BLOCK
    assert one("asyncio.loop.steps", "{step}") >= 2 * N
    assert one("asyncio.loop.blocking_steps", "{step}") == 1
    _u, q = got["asyncio.loop.step.duration"]
    assert _u == "s"
    qs = {p[0]["quantile"]: p[1] for p in q}
    assert set(qs) == {"p50", "p95", "p99", "max"}
    assert qs["p50"] <= qs["p95"] <= qs["p99"] <= qs["max"]
    assert BLOCK <= qs["max"] < 0.25
    if "asyncio.loop.utilization" in got:
        assert got["asyncio.loop.utilization"][0] == "1"


def test_otel_blocking_steps_counts_every_slow_step():
    """``asyncio.loop.blocking_steps`` is a counter: it must count every slow
    step, as ``asyncio_loop_blocking_steps_total`` does, not stop at the
    number of recent steps the agent keeps with their stacks (100)."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from loopscope.agent.core import current
    from loopscope.agent.prometheus import families
    from loopscope.exporters.otel import instrument

    SLOW = 150

    async def main():
        for _ in range(SLOW):
            time.sleep(0.003)  # one step over the 1 ms threshold
            await asyncio.sleep(0)
        prom = {name: s for name, _tp, _h, s in families(current())}
        return prom["asyncio_loop_blocking_steps_total"][0][2], _otel_points(reader)

    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    try:
        with _installed(slow_step=0.001):
            instrument(meter_provider=mp)
            prom_total, got = asyncio.run(main())
    finally:
        mp.shutdown()
    assert prom_total >= SLOW
    (point,) = got["asyncio.loop.blocking_steps"][1]
    assert point[1] == prom_total, f"otel says {point[1]}, prometheus {prom_total}"


def test_scrape_does_not_wait_for_a_blocked_loop(ls):
    """The endpoint answers from its own thread while the loop is blocked,
    and says so in asyncio_loop_blocked_seconds."""
    port = free_port()
    go = ls.path("go")
    prog = ls.start("health_block.py", go, run_opts=("--prometheus", f"127.0.0.1:{port}"))
    prog.wait_line("READY")
    prog.wait_agent()
    open(go, "w").close()
    prog.wait_line("BLOCKING", timeout=5)

    def blocked():
        t0 = time.perf_counter()
        status, _c, text = _get(f"http://127.0.0.1:{port}/metrics")
        took = time.perf_counter() - t0
        samples, _t = parse_exposition(text)
        b = value(samples, "asyncio_loop_blocked_seconds", thread="MainThread")
        return (b, took) if b > 0.1 else None

    b, took = wait_until(blocked, timeout=1.3, interval=0.01, what="asyncio_loop_blocked_seconds > 0.1")
    assert not any(line == "UNBLOCKED" for line in prog.stdout.lines)
    assert b < 1.5 and took < 0.5
