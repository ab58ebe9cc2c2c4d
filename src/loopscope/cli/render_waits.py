"""`loopscope primitives | deadlocks | groups | asyncgens`: fetch and render.

Works on a live agent (one RPC each) and on a dump file (the snapshot's
``primitives``/``deadlocks``/``groups``/``asyncgens``), like every other
read command.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..client.errors import ClientError
from ..model import to_json
from .render import fmt_age, table

Json = dict[str, Any]

_METHODS = {
    "primitives": ("primitives.list", "primitives"),
    "deadlocks": ("graph.deadlocks", None),
    "groups": ("groups.list", "groups"),
    "asyncgens": ("asyncgens.list", "asyncgens"),
}


def fetch(src: Any, what: str, params: dict[str, Any] | None = None) -> Any:
    method, key = _METHODS[what]
    if src.kind == "agent":
        res = src._call(method, params or {})
        return res if key is None else res[key]
    data = getattr(src.snap, what, None)
    if data is None:
        raise ClientError(f"{src.path} has no {what} (dumped by a loopscope without them, or with LOOPSCOPE_PRIMITIVES=0)")
    return to_json(data)


def _task(r: Json | None) -> str:
    if not r:
        return "?"
    name = r.get("task_name") or r["task_id"]
    extra = "" if r.get("state") == "pending" else f", {r.get('state')}"
    return f"{name!r} ({r['task_id']}{extra})"


def _where(r: Json) -> str:
    w = r.get("where")
    return f" at {w['filename']}:{w['lineno']}" if w else ""


def unknown_holders(kind: str) -> str:
    """Why a primitive's holders are not known."""
    if kind == "anyio.Semaphore":
        return "not recorded by anyio"
    if kind == "anyio.CapacityLimiter":
        return "borrowed on behalf of non-tasks"
    return "unknown (acquired before loopscope)"


def unknown_site(kind: str) -> str:
    """What a primitive without a creation record is."""
    return "(created by anyio itself or before loopscope)" if kind.startswith("anyio.") else "(created before loopscope)"


def primitives(prims: list[Json], long: bool = False) -> str:
    rows = []
    for p in prims:
        if p.get("holders"):
            holders = ", ".join(f"{h.get('task_name') or h['task_id']}" + (f" {fmt_age(h.get('for_s'))}" if h.get("for_s") is not None else "") + ("" if h["state"] == "pending" else f" ({h['state']})") for h in p["holders"])
        elif not p.get("holders_known", True):
            holders = unknown_holders(p["kind"])
        else:
            holders = "-"
        waiters = ", ".join(f"{w.get('task_name') or w['task_id']}" + (f" [{w['role']}]" if w.get("role") not in (None, "acquire", "wait") else "") + (f" {fmt_age(w.get('for_s'))}" if w.get("for_s") is not None else "") for w in p.get("waiters") or []) or "-"
        site = p.get("site") or unknown_site(p["kind"])
        rows.append([p["kind"], p["id"], p["state"], holders, waiters, site])
    return table(["kind", "id", "state", "holders", "waiters", "created at"], rows, None if long else {3: 40, 4: 50, 5: 60})


def deadlocks(rep: Json) -> str:
    out: list[str] = []
    cycles = rep.get("cycles") or []
    if not cycles:
        out.append(f"no deadlock: no cycle in the wait-for graph ({rep.get('tasks', 0)} live tasks, {rep.get('edges', 0)} wait edges)")
    for i, c in enumerate(cycles, 1):
        dur = f", for at least {fmt_age(c['for_s'])}" if c.get("for_s") is not None else ""
        out.append(f"DEADLOCK {i}: {c['summary']}{dur}")
        for e in c["edges"]:
            t = e["task"]
            waited = f" for {fmt_age(t['for_s'])}" if t.get("for_s") is not None else ""
            if e["object_kind"] == "task":
                out.append(f"  task {_task(t)} awaits {e['object_label']} ({e['object_id']}){waited}{_where(t)}")
            else:
                held = f", held by task {_task(e['held_by'])}" + (f" for {fmt_age(e['held_by']['for_s'])}" if e["held_by"].get("for_s") is not None else "") if e.get("held_by") else ""
                out.append(f"  task {_task(t)} waits{waited} on {e['object_label']} {e['object_id']}{held}{_where(t)}")
    suspects = rep.get("suspects") or []
    if suspects:
        out.append("")
        out.append("Heuristics (possible problems, not proven deadlocks):")
        for s in suspects:
            out.append(f"  - {s['summary']}")
            for t in s.get("tasks") or []:
                if t.get("role") != "holder":
                    waited = f" for {fmt_age(t['for_s'])}" if t.get("for_s") is not None else ""
                    out.append(f"      task {_task(t)} waits ({t.get('role')}){waited}{_where(t)}")
    for note in rep.get("notes") or []:
        out.append(f"({note})")
    return "\n".join(out)


def groups(gs: list[Json]) -> str:
    """Groups as a tree: a group under the group whose child is its parent task."""
    if not gs:
        return "no live task groups"
    child_of: dict[str, str] = {}
    for g in gs:
        for c in g.get("children") or []:
            child_of[c["task_id"]] = g["id"]
    kids: dict[str, list[Json]] = {}
    roots = []
    for g in gs:
        owner = child_of.get(g.get("parent_id") or "")
        if owner and owner != g["id"]:
            kids.setdefault(g.get("parent_id") or "", []).append(g)
        else:
            roots.append(g)
    lines: list[str] = []

    def emit(prefix: str, last: bool, text: str) -> str:
        lines.append(f"{prefix}{'└── ' if last else '├── '}{text}")
        return prefix + ("    " if last else "│   ")

    def walk(g: Json, prefix: str, last: bool, depth: int) -> None:
        head = f"[{g['kind']}] {g['id']}  {g['state']}  age {fmt_age(g.get('age'))}  parent task {g.get('parent_name')!r}  created at {g.get('site') or '?'}"
        p = emit(prefix, last, head)
        children = g.get("children") or []
        for j, c in enumerate(children):
            sub = kids.get(c["task_id"], []) if depth < 32 else []
            text = f"(T) {c.get('task_name')} {c['task_id']} {c['state']}"
            if c["state"] != "pending" and c.get("for_s") is not None:
                text += f" {fmt_age(c['for_s'])} ago"
            q = emit(p, j == len(children) - 1 and not g.get("finished_dropped"), text)
            for k, sg in enumerate(sub):
                walk(sg, q, k == len(sub) - 1, depth + 1)
        if g.get("finished_dropped"):
            emit(p, True, f"… {g['finished_dropped']} older finished children not kept")

    for j, g in enumerate(roots):
        walk(g, "", j == len(roots) - 1, 0)
    return "\n".join(lines)


def asyncgens(ags: list[Json]) -> str:
    if not ags:
        return "no live async generators"
    rows = []
    for a in ags:
        fr = a.get("frame")
        rows.append(
            [
                a["id"],
                a["name"],
                a["state"],
                fmt_age(a.get("age")),
                f"{a.get('owner_name')!r} ({a.get('owner_id')})" if a.get("owner_id") else "?",
                f"{fr['filename']}:{fr['lineno']}" if fr else "-",
                a.get("site") or "(first iterated before loopscope)",
            ]
        )
    return table(["id", "async generator", "state", "age", "owner task", "current frame", "first iterated at"], rows, {5: 60, 6: 60})


# -- commands (wired in cli/main.py) -----------------------------------------------------------


def add_commands(sub: Any, add_target: Any) -> None:
    p = sub.add_parser("primitives", help="locks, semaphores, events, conditions, queues, barriers: holders and waiters")
    add_target(p)
    p.add_argument("--kind", help="only this kind (Lock, Semaphore, Event, Queue, …)")
    p.add_argument("-l", "--long", action="store_true", help="do not clip columns")
    p.set_defaults(func=cmd_primitives, needs_target=True)
    p = sub.add_parser("deadlocks", help="cycles in the wait-for graph (tasks, locks), plus heuristics")
    add_target(p)
    p.set_defaults(func=cmd_deadlocks, needs_target=True)
    p = sub.add_parser("groups", help="task groups as a tree, with their children")
    add_target(p)
    p.set_defaults(func=cmd_groups, needs_target=True)
    p = sub.add_parser("asyncgens", help="live async generators")
    add_target(p)
    p.set_defaults(func=cmd_asyncgens, needs_target=True)


def _out(args: argparse.Namespace, key: str, data: Any, text: str) -> int:
    from .main import _print_json

    if args.json:
        _print_json({key: data} if key else data)
    else:
        print(text)
    return 0


def cmd_primitives(args: argparse.Namespace, src: Any) -> int:
    prims = fetch(src, "primitives", {"kind": args.kind} if args.kind else {})
    if args.kind and src.kind == "dump":
        prims = [p for p in prims if p["kind"].lower() == args.kind.lower() or p["kind"].lower().endswith("." + args.kind.lower())]
    return _out(args, "primitives", prims, primitives(prims, args.long) if prims else "no live primitives")


def cmd_deadlocks(args: argparse.Namespace, src: Any) -> int:
    rep = fetch(src, "deadlocks")
    return _out(args, "", rep, deadlocks(rep))


def cmd_groups(args: argparse.Namespace, src: Any) -> int:
    gs = fetch(src, "groups")
    return _out(args, "groups", gs, groups(gs))


def cmd_asyncgens(args: argparse.Namespace, src: Any) -> int:
    ags = fetch(src, "asyncgens")
    return _out(args, "asyncgens", ags, asyncgens(ags))
