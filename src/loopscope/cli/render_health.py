"""Plain-text rendering of the ``health`` report (``loopscope health``)."""

from __future__ import annotations

from typing import Any

from .render import fmt_time

Json = dict[str, Any]
_SPARK = "▁▂▃▄▅▆▇█"


def fmt_dur(seconds: float | None) -> str:
    """A duration with a unit that keeps three significant digits."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


def sparkline(values: list[float | None], width: int = 60) -> str:
    vals = [v for v in values[-width:]]
    known = [v for v in vals if v is not None]
    if not known:
        return ""
    top = max(known) or 1.0
    return "".join(" " if v is None else _SPARK[min(len(_SPARK) - 1, int(v / top * (len(_SPARK) - 1) + 0.5))] for v in vals)


def _stack(frames: list[Json], indent: str = "    ", limit: int = 12) -> list[str]:
    out = []
    for fr in frames[:limit]:
        out.append(f"{indent}{fr.get('function')}  {fr.get('filename')}:{fr.get('lineno')}")
        if fr.get("source"):
            out.append(f"{indent}    {fr['source']}")
    if len(frames) > limit:
        out.append(f"{indent}… {len(frames) - limit} more frames")
    return out


def _task(t: Json | None) -> str:
    if not t:
        return "(not a task's step)"
    name = t.get("name")
    return f"task {name!r} ({t.get('coro')}, {t.get('id')})" if name else f"callback {t.get('coro')}"


def render_loop(lp: Json) -> list[str]:
    out = []
    exact = "exact, per step" if lp.get("exact") else "approximate (no step hook on this loop: see docs/metrics.md)"
    out.append(f"loop {lp['loop_id']}  {lp.get('loop_class')}  thread {lp.get('thread')}  [{exact}]")
    b = lp.get("blocked")
    if b:
        out.append(f"  !! BLOCKED for {fmt_dur(b.get('duration'))} (since {fmt_time(b.get('since'))}) in {_task(b.get('task'))}")
        out.extend(_stack(b.get("stack") or [], "     "))
    lag = lp["lag"]
    util = lp.get("utilisation")
    out.append(
        f"  lag       last {fmt_dur(lag['last'])}  avg {fmt_dur(lag['avg'])}  max {fmt_dur(lag['max'])}"
        f"  (probe every {fmt_dur(lag['interval'])})"
    )
    out.append(f"  busy      {'-' if util is None else f'{util * 100:.1f}%'} of the last second")
    st = lp["steps"]
    if st.get("count") is not None:
        out.append(
            f"  steps     {st['count']}  min {fmt_dur(st['min'])}  avg {fmt_dur(st['avg'])}  p50 {fmt_dur(st['p50'])}"
            f"  p95 {fmt_dur(st['p95'])}  p99 {fmt_dur(st['p99'])}  max {fmt_dur(st['max'])}"
        )
    t = lp["tasks"]
    out.append(
        f"  tasks     live {t['live']}  created {t['created']}  finished {t['finished']}"
        f" (done {t['done']}, failed {t['failed']}, cancelled {t['cancelled']}, destroyed pending {t['destroyed_pending']})"
    )
    for ex in lp.get("executors") or []:
        out.append(
            f"  executor  {ex['name']}: {ex['active']}/{ex['max_workers']} busy, {ex['threads']} threads, {ex['queued']} queued"
        )
    series = lp.get("series") or {}
    if series.get("lag"):
        out.append(f"  lag       {sparkline(series['lag'])}  (last {len(series['lag'][-60:])} s)")
    if any(v is not None for v in series.get("utilisation") or []):
        out.append(f"  busy      {sparkline(series['utilisation'])}")
    top = lp.get("top_busy") or []
    if top:
        out.append("  busiest tasks:")
        for r in top:
            out.append(
                f"    {fmt_dur(r.get('busy')):>9} busy  {r.get('steps') or 0:>7} steps  longest {fmt_dur(r.get('longest')):>8}"
                f"  {r.get('name')}  {r.get('coro')}"
            )
    blocking = lp.get("blocking") or []
    if blocking:
        out.append(f"  blocking steps (>{fmt_dur(st.get('slow_threshold'))}), newest first:")
        for e in blocking[:10]:
            out.append(f"    {fmt_time(e['at'])}  {fmt_dur(e['duration'])}  {_task(e.get('task'))}")
            if e.get("stack"):
                out.extend(_stack(e["stack"], "      ", 8))
            else:
                out.append("      (stack not captured: the step ended before the watchdog looked)")
    return out


def render_health(report: Json) -> str:
    lines: list[str] = []
    loops = report.get("loops") or []
    if not loops:
        return "no running event loop with metrics in this process"
    dl = report.get("deadlocks")
    if dl and dl.get("count"):
        lines.append(f"!! {dl['count']} DEADLOCK(S):")
        lines.extend(f"   {c.get('summary')}" for c in dl.get("cycles") or [])
        lines.append("   (loopscope deadlocks PID shows each cycle with its locks and lines)")
        lines.append("")
    for lp in loops:
        lines.extend(render_loop(lp))
        lines.append("")
    return "\n".join(lines).rstrip()
