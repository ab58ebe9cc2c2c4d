"""Plain-text renderings of the model for the terminal.

``ps`` and ``pstree`` follow the corrected layout CPython 3.14 prints for
``python -m asyncio ps|pstree``: every task shows its *own* coroutine stack
and, separately, its awaiter's chain, so leaf tasks are no longer blank.
Output is plain text (fast for 100,000 rows, greppable, pipeable).
"""

from __future__ import annotations

import time
from typing import Any

Json = dict[str, Any]


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def fmt_time(wall: float | None) -> str:
    if wall is None:
        return "?"
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall % 1 * 1000):03d}"


def chain_names(frames: list[Json] | None) -> str:
    return " -> ".join(f["function"] for f in frames or [])


def user_frame(frames: list[Json]) -> Json | None:
    """The innermost frame outside the standard library's asyncio, which is
    where a person would look first (e.g. the wait_for call, not tasks.py)."""
    for f in frames:
        if "/asyncio/" not in f["filename"]:
            return f
    return frames[0] if frames else None


def frame_line(f: Json) -> str:
    return f"{f['function']} {f['filename']}:{f['lineno']}"


def table(headers: list[str], rows: list[list[str]], max_width: dict[int, int] | None = None) -> str:
    max_width = max_width or {}
    cols = len(headers)
    clipped = [[_clip(str(r[i]), max_width.get(i)) for i in range(cols)] for r in rows]
    widths = [len(h) for h in headers]
    for r in clipped:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines.append("-" * len(lines[0]))
    for r in clipped:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
    return "\n".join(lines)


def _clip(s: str, width: int | None) -> str:
    """Shorten to ``width``, cutting the middle so that both the function and
    the ``:line`` at the end of a location stay visible."""
    if width is None or len(s) <= width:
        return s
    head = (width - 1) // 2
    return s[:head] + "…" + s[len(s) - (width - 1 - head) :]


def loop_banner(loops: list[Json]) -> list[str]:
    """A warning per blocked loop, with the blocking stack (innermost first)."""
    out = []
    for lp in loops or []:
        if not lp.get("blocked"):
            continue
        out.append(
            f"!! loop {lp['id']} (thread {lp.get('thread_id')}) is BLOCKED for {fmt_age(lp.get('blocked_for'))}"
            f" (since {fmt_time(lp.get('blocked_since'))}); the code blocking it:"
        )
        for f in (lp.get("blocked_stack") or [])[:12]:
            src = f"    {f['source']}" if f.get("source") else ""
            out.append(f"     {frame_line(f)}{src}")
    return out


def ps(page: Json, tid_of: dict[str, Any], long: bool = False, wide: bool = False) -> str:
    headers = ["tid", "task id", "task name", "coroutine stack", "awaiter chain", "awaiter name", "awaiter id"]
    if long:
        headers[3:3] = ["state", "age", "creation site"]
    rows = []
    by_id = {t["id"]: t for t in page["tasks"]}
    for t in page["tasks"]:
        tid = str(tid_of.get(t["loop_id"], "") or "")
        own = chain_names(t.get("stack"))
        extra = [t["state"], fmt_age(t.get("age")), t.get("site") or "?"] if long else []
        awaiters = t.get("awaiters") or []
        if not awaiters:
            rows.append([tid, t["id"], t["name"], *extra, own, "", "", "0x0"])
        for aw in awaiters:
            aw_stack = aw.get("stack") or (by_id.get(aw["task_id"]) or {}).get("stack")
            rows.append([tid, t["id"], t["name"], *extra, own, chain_names(aw_stack), aw["task_name"], aw["task_id"]])
    widths = {3 + (3 if long else 0): 60, 4 + (3 if long else 0): 60}
    if long:
        widths[5] = 50
        # what each task waits on ("Lock (created at …) held by task 'x' for 3.0 s")
        headers.append("waiting on")
        waits = {t["id"]: (t.get("waiting_on") or {}).get("description", "") for t in page["tasks"]}
        for r in rows:
            r.append(waits.get(r[1], ""))
        widths[len(headers) - 1] = 100
    return table(headers, rows, None if wide else widths)


def find_cycles(tasks: dict[str, Json]) -> list[list[str]]:
    """Await cycles in the task → awaiter graph (each reported once)."""
    edges = {tid: [a["task_id"] for a in (t.get("awaiters") or []) if a["task_id"] in tasks] for tid, t in tasks.items()}
    cycles: list[list[str]] = []
    seen_keys: set[frozenset[str]] = set()
    state: dict[str, int] = {}

    def dfs(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                cyc = path[path.index(nxt) :]
                key = frozenset(cyc)
                if key not in seen_keys:
                    seen_keys.add(key)
                    cycles.append(cyc + [nxt])
            elif state.get(nxt) is None:
                dfs(nxt, path)
        path.pop()
        state[node] = 2

    for tid in tasks:
        if state.get(tid) is None:
            dfs(tid, [])
    return cycles


def pstree(page: Json) -> str:
    tasks = {t["id"]: t for t in page["tasks"]}
    children: dict[str, list[str]] = {tid: [] for tid in tasks}
    for tid, t in tasks.items():
        for aw in t.get("awaiters") or []:
            if aw["task_id"] in children and tid not in children[aw["task_id"]]:
                children[aw["task_id"]].append(tid)
    roots = [tid for tid, t in tasks.items() if not any(a["task_id"] in tasks for a in (t.get("awaiters") or []))]
    lines: list[str] = []
    cycles = find_cycles(tasks)
    printed: set[str] = set()

    def emit(prefix: str, last: bool, text: str) -> str:
        lines.append(f"{prefix}{'└── ' if last else '├── '}{text}")
        return prefix + ("    " if last else "│   ")

    def walk(tid: str, prefix: str, last: bool, path: tuple[str, ...]) -> None:
        t = tasks[tid]
        if tid in path:
            emit(prefix, last, f"(T) {t['name']}  ↺ await cycle")
            return
        printed.add(tid)
        prefix = emit(prefix, last, f"(T) {t['name']}")
        frames = list(reversed(t.get("stack") or []))  # outermost first
        kids = children.get(tid, [])
        for f in frames:
            prefix = emit(prefix, True, frame_line(f))
        for j, kid in enumerate(kids):
            walk(kid, prefix, j == len(kids) - 1, path + (tid,))

    for j, root in enumerate(roots):
        walk(root, "", j == len(roots) - 1, ())
    leftover = [tid for tid in tasks if tid not in printed]
    for j, tid in enumerate(leftover):
        if tid not in printed:
            walk(tid, "", j == len(leftover) - 1, ())
    if cycles:
        lines.append("")
        for cyc in cycles:
            lines.append("await cycle: " + " → ".join(tasks[c]["name"] + f" ({c})" for c in cyc))
    return "\n".join(lines)


def inspect(t: Json) -> str:
    out = [f"task {t['name']}  ({t['id']})", f"  coroutine  {t['coro']}", f"  state      {t['state']}"]
    if t.get("created") is not None:
        out.append(f"  created    {fmt_time(t['created'])}  (age {fmt_age(t.get('age'))})")
    if not t.get("tracked", True):
        out.append("  created    before loopscope was installed: no creation record")
    if t.get("site"):
        out.append(f"  site       {t['site']}")
    if t.get("steps") is not None:
        from .render_health import fmt_dur

        out.append(
            f"  steps      {t['steps']}  busy {fmt_dur(t.get('busy'))}  idle {fmt_dur(t.get('idle'))}"
            f"  longest {fmt_dur(t.get('longest'))}  first step after {fmt_dur(t.get('first_step'))}"
        )
    w = t.get("waiting_on")
    if w:
        extra = f" (fires in {fmt_age(w['deadline_in'])})" if w.get("deadline_in") is not None else ""
        out.append(f"  waiting on {w['description']}{extra}")
    if t.get("stack"):
        out.append("")
        out.append("Stack (innermost first):")
        out.extend(_frames(t["stack"]))
    if t.get("awaiters") is not None:
        out.append("")
        if t["awaiters"]:
            out.append("Awaited by:")
            for aw in t["awaiters"]:
                out.append(f"  {aw['task_name']} ({aw['task_id']}) via {aw['via']}")
                for f in (aw.get("stack") or [])[:8]:
                    out.append(f"      {frame_line(f)}")
        else:
            out.append("Awaited by: nobody")
    if t.get("creation_chain"):
        out.append("")
        out.append("Created (chain through parent tasks):")
        chain = t["creation_chain"]
        for i, link in enumerate(chain):
            who = f"by task {link['parent_name']} ({link['parent_id']})" if link.get("parent_id") else "outside any task"
            label = "this task" if i == 0 else f"{chain[i - 1].get('parent_name') or 'its parent'} ({link.get('task_id') or '?'})"
            out.append(f"  {label} was created at {fmt_time(link.get('created'))} {who}, in:")
            out.extend(_frames(link["frames"], indent="      "))
            if link.get("truncated"):
                out.append("      … older ancestors dropped (max_chain)")
    c = t.get("cancel")
    if c:
        out.append("")
        by = f"task {c['by_task_name']} ({c['by_task_id']})" if c.get("by_task_id") else "code outside any task"
        out.append(f"Cancelled at {fmt_time(c['at'])} by {by}" + (f", message {c['message']!r}" if c.get("message") else "") + (f" ({c['count']} cancel calls)" if c.get("count", 1) > 1 else ""))
        out.append("  cancel() called from:")
        out.extend(_frames(c["by_stack"], indent="      "))
        out.append("  the task was suspended at:")
        out.extend(_frames(c["victim_stack"], indent="      "))
    o = t.get("outcome")
    if o:
        out.append("")
        line = f"Outcome: {o['state']} (ended by {fmt_time(o['ended'])})"
        if o.get("exc_type"):
            line += f": {o['exc_type']}: {o.get('exc_message') or ''}"
        out.append(line)
        if o.get("traceback"):
            out.append("  raised at (innermost first):")
            out.extend(_frames(o["traceback"], indent="      "))
    return "\n".join(out)


def _frames(frames: list[Json], indent: str = "  ") -> list[str]:
    out = []
    for f in frames:
        out.append(f"{indent}{frame_line(f)}")
        if f.get("source"):
            out.append(f"{indent}    {f['source']}")
        for k, v in (f.get("locals") or {}).items():
            out.append(f"{indent}    {k} = {v}")
    return out


def history(page: Json) -> str:
    rows = []
    for t in page["tasks"]:
        o = t.get("outcome") or {}
        detail = ""
        if o.get("exc_type"):
            detail = f"{o['exc_type']}: {o.get('exc_message') or ''}"
        c = t.get("cancel")
        if c:
            by = c.get("by_task_name") or "outside any task"
            site = user_frame(c.get("by_stack") or [])
            detail = f"by {by}" + (f" at {site['filename']}:{site['lineno']}" if site else "") + (f" msg={c['message']!r}" if c.get("message") else "")
        rows.append([fmt_time(o.get("ended")), t["state"], t["id"], t["name"], t["coro"], t.get("site") or "?", detail])
    out = table(["ended", "state", "task id", "name", "coroutine", "creation site", "details"], rows, {4: 40, 5: 50})
    skipped = page.get("done_not_kept") or 0
    if skipped:
        out += f"\n({skipped} clean completions counted but not kept: above max(history size, 1000) at once, then a tenth of that a second, they are sampled; failed and cancelled tasks are all kept)"
    return out


def stats(res: Json) -> str:
    rows = [[str(g["count"]), fmt_age(g.get("oldest_age")), fmt_age(g.get("newest_age")), g["key"]] for g in res["groups"]]
    return table(["tasks", "oldest", "newest", res["by"]], rows)


def agents(rows: list[Json]) -> str:
    return table(
        ["pid", "python", "loops", "tasks", "blocked", "command"],
        [[str(r["pid"]), r["python"], str(r["loops"]), str(r["tasks"]), r["blocked"], r["command"]] for r in rows],
        {5: 80},
    )
