"""The loop-health report: what ``loopscope health``, the TUI and the
exporters read.

Built in the server (or exporter) thread from counters the loop keeps
current; the only per-task work is the optional "top tasks" list, which
reads two slots per task without building records.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import TYPE_CHECKING, Any

from ..model import to_json
from .introspect import task_id
from .loops import live_tasks
from .metrics import executor_stats, highest, lowest, percentile
from .tracker import safe_coro_name
from .watchdog import live_count

if TYPE_CHECKING:
    from .core import Agent


def _current(loop: Any) -> Any:
    try:
        return asyncio.current_task(loop)
    except Exception:  # noqa: BLE001
        return None


def _task_ref(task: Any) -> dict[str, Any] | None:
    if task is None or not hasattr(task, "get_name"):
        return None
    try:
        return {"id": task_id(task), "name": task.get_name(), "coro": safe_coro_name(task)}
    except Exception:  # noqa: BLE001
        return None


def _blocking_json(agent: Agent, entry: tuple) -> dict[str, Any]:
    t0, d, (tid, name, coro), stack = entry
    task = {"id": hex(tid), "name": name, "coro": coro} if tid is not None else None
    if task is None and coro:
        task = {"id": None, "name": None, "coro": coro}
    return {"at": agent.tracker.wall(t0), "duration": d, "task": task, "stack": to_json(stack) if stack else []}


def _top_tasks(loop: Any, n: int) -> list[dict[str, Any]]:
    if n <= 0:
        return []
    rows = []
    for t in live_tasks(loop):
        busy = getattr(t, "_ls_busy", None)
        if busy:
            rows.append((busy, id(t), t))
    now = time.monotonic()
    out = []
    for busy, _i, t in heapq.nlargest(n, rows, key=lambda r: r[0]):
        ref = _task_ref(t) or {}
        created = getattr(t, "_ls_created", None)
        age = now - created if created is not None else None
        ref.update(
            steps=getattr(t, "_ls_steps", None),
            busy=busy,
            idle=max(0.0, age - busy) if age is not None else None,
            longest=getattr(t, "_ls_longest", None),
        )
        out.append(ref)
    return out


def loop_health(agent: Agent, loop: Any, st: Any, top: int = 10) -> dict[str, Any]:
    m = st.metrics
    buckets = m.buckets()
    steps = sum(c for _b, c in buckets)
    lo = lowest(buckets)
    hi = m.step_max or highest(buckets) or 0.0
    created = agent.loops.created_count(loop)
    live = live_count(agent.loops, loop, m)
    info = agent.loops.info(loop, st, live=live)
    blocked = None
    if info.blocked:
        cap = m.block_capture
        task = _current(loop)
        if task is None and cap is not None:
            task = cap[3]()
        stack = info.blocked_stack
        if stack is None and cap is not None:
            stack = cap[1]
        blocked = {
            "since": info.blocked_since,
            "duration": info.blocked_for,
            "task": _task_ref(task),
            "stack": to_json(stack or []),
        }
    executors = []
    default = getattr(loop, "_default_executor", None)
    if default is not None:
        ex = executor_stats("default", default)
        if ex is not None:
            executors.append(ex)
    for name, ex_obj in agent.executors.items():
        ex = executor_stats(name, ex_obj)
        if ex is not None:
            executors.append(ex)
    uptime = time.monotonic() - agent.tracker.mono0
    return {
        "loop_id": st.id,
        "kind": "uvloop" if "uvloop" in st.kind else "asyncio",
        "loop_class": st.kind,
        "thread": st.thread_name,
        "exact": bool(st.hooked),
        "running": info.running,
        "lag": {
            "last": m.lag_last,
            "max": m.lag_max,
            "avg": (m.lag_sum / m.lag_n) if m.lag_n else 0.0,
            "interval": agent.config.heartbeat,
            "probes": m.lag_n,
        },
        "utilisation": m.series.utilisation[-1] if m.series.utilisation else None,
        "busy": m.busy if st.hooked else None,
        "uptime": uptime,
        "steps": {
            "count": steps if st.hooked else None,
            "min": lo if steps else None,
            "avg": (m.busy / steps) if steps and st.hooked else None,
            "p50": percentile(buckets, 0.50, hi) if st.hooked else None,
            "p95": percentile(buckets, 0.95, hi) if st.hooked else None,
            "p99": percentile(buckets, 0.99, hi) if st.hooked else None,
            "max": hi if steps else None,
            "slow_threshold": m.slow,
            "slow_count": m.slow_count,
        },
        "tasks": {
            "created": created,
            "finished": m.done + m.failed + m.cancelled,
            "done": m.done,
            "failed": m.failed,
            "cancelled": m.cancelled,
            "destroyed_pending": m.destroyed,
            "live": live,
        },
        "blocked": blocked,
        "blocking": [_blocking_json(agent, e) for e in list(m.blocking)][::-1],
        "executors": executors,
        "top_busy": _top_tasks(loop, top) if st.hooked else [],
        "series": m.series.as_json(),
    }


def _deadlocks(agent: Agent) -> list[dict[str, Any]] | None:
    """Proven wait-for cycles right now (no heuristics), summarised."""
    try:
        from .waitgraph import find_cycles

        cycles = find_cycles(agent)
    except Exception as e:  # noqa: BLE001
        agent.tracker.note_error(e)
        return None
    return [{"summary": c.summary, "for": c.for_s} for c in cycles]


def health_report(agent: Agent, top: int = 10, deadlocks: bool = True) -> dict[str, Any]:
    loops = []
    for loop, st in agent.loops.states():
        if st.metrics is None:
            continue
        try:
            loops.append(loop_health(agent, loop, st, top))
        except Exception as e:  # noqa: BLE001 - a report must not fail as a whole
            agent.tracker.note_error(e)
    report: dict[str, Any] = {"taken_at": time.time(), "pid": agent.pid, "loops": loops}
    if deadlocks:
        found = _deadlocks(agent)
        report["deadlocks"] = None if found is None else {"count": len(found), "cycles": found}
    return report

