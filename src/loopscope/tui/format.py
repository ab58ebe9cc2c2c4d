"""Small text helpers shared by the screens (no Textual imports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..cli.render import fmt_age, fmt_time, frame_line

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], width: int = 60) -> str:
    """The last ``width`` values as block characters, scaled to their max."""
    vals = [v if v is not None else 0.0 for v in list(values)[-width:]]
    if not vals:
        return ""
    top = max(vals) or 1.0
    return "".join(BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))] for v in vals)


def ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.1f}ms"


def fmt_busy(seconds: float | None) -> str:
    """A task's busy time, compact: 0.3ms, 12.5ms, 1.52s, 2m05s."""
    if seconds is None:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 60.0:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def fmt_count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def blocked_banner(loops: list[dict[str, Any]]) -> str:
    """One line per blocked loop and the top of its blocking stack."""
    lines = []
    for lp in loops:
        if not lp.get("blocked"):
            continue
        lines.append(f"LOOP BLOCKED for {fmt_age(lp.get('blocked_for'))} (loop {lp.get('id')}, thread {lp.get('thread_name') or '?'})")
        for f in (lp.get("blocked_stack") or [])[:4]:
            lines.append(f"    at {frame_line(f)}" + (f"   {f['source'].strip()}" if f.get("source") else ""))
    return "\n".join(lines)


__all__ = ["blocked_banner", "fmt_age", "fmt_busy", "fmt_count", "fmt_time", "frame_line", "ms", "sparkline"]
