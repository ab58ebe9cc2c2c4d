"""The ``loopscope`` command line.

Every read command takes a TARGET (pid, agent socket path or dump file) and
``--json``; list commands take ``--sort``, ``--filter`` and ``--limit``.
Errors are one line on stderr and exit code 2; nothing prints a traceback
for a condition the user can fix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .. import __version__
from ..model import SCHEMA_VERSION
from ..query import GROUP_KEYS, SORT_KEYS, QueryError, TaskFilter
from ..client.errors import ClientError
from ..client.source import AgentSource, DumpSource, open_target
from . import render, render_waits


def _print_json(obj: Any) -> None:
    json.dump({"schema": SCHEMA_VERSION, **obj} if isinstance(obj, dict) else obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _filter(args: argparse.Namespace) -> TaskFilter:
    return TaskFilter.parse(" ".join(args.filter or []))


def _banner(source: AgentSource | DumpSource, loops: list[dict[str, Any]] | None) -> None:
    lines = render.loop_banner(loops or [])
    if source.kind == "dump":
        lines.insert(0, f"(read from {source.label}, taken {render.fmt_time(getattr(source, 'snap').taken_at)})")
    for line in lines:
        print(line, file=sys.stderr)


def _tids(loops: list[dict[str, Any]]) -> dict[str, Any]:
    return {lp["id"]: lp.get("thread_id") for lp in loops or []}


def cmd_ps(args: argparse.Namespace, src: AgentSource | DumpSource) -> int:
    page = src.graph(_filter(args), args.sort, args.limit)
    if args.json:
        _print_json(page)
        return 0
    _banner(src, page.get("loops"))
    print(render.ps(page, _tids(page.get("loops") or []), long=args.long, wide=args.wide))
    if page["matched"] > len(page["tasks"]) or page["matched"] < page["total"]:
        print(f"({len(page['tasks'])} shown, {page['matched']} matched, {page['total']} live tasks)", file=sys.stderr)
    return 0


def cmd_pstree(args: argparse.Namespace, src: AgentSource | DumpSource) -> int:
    page = src.graph(_filter(args), None, args.limit)
    if args.json:
        _print_json(page)
        return 0
    _banner(src, page.get("loops"))
    print(render.pstree(page))
    return 0


def cmd_inspect(args: argparse.Namespace, src: AgentSource | DumpSource) -> int:
    info = src.task(args.task, args.locals)
    if args.json:
        _print_json(info)
        return 0
    _banner(src, src.hello().get("loops"))
    print(render.inspect(info))
    return 0


def cmd_history(args: argparse.Namespace, src: AgentSource | DumpSource) -> int:
    kind = "cancelled" if args.cancelled else "failed" if args.failed else "done" if args.done else "all"
    page = src.history(kind, _filter(args), args.sort, args.limit, args.json)
    if args.json:
        _print_json(page)
        return 0
    print(render.history(page))
    if page["matched"] > len(page["tasks"]):
        print(f"({len(page['tasks'])} shown of {page['matched']})", file=sys.stderr)
    return 0


def cmd_stats(args: argparse.Namespace, src: AgentSource | DumpSource) -> int:
    res = src.stats(args.by, _filter(args), args.limit)
    if args.json:
        _print_json(res)
        return 0
    _banner(src, res.get("loops"))
    print(render.stats(res))
    print(f"({res['total']} live tasks)", file=sys.stderr)
    return 0


def cmd_dump(args: argparse.Namespace, src: AgentSource | DumpSource) -> int:
    snap = src.snapshot()
    path = args.output or f"loopscope-{src.hello().get('pid', 'x')}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(snap, f, separators=(",", ":"), default=str)
    os.replace(tmp, path)
    print(f"wrote {path}: {len(snap['tasks'])} live tasks, {len(snap['history'])} finished", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..client.discovery import find_agents

    rows = []
    for ag in find_agents():
        try:
            src = AgentSource(ag.path, ag.pid)
        except ClientError as e:
            rows.append({"pid": ag.pid, "python": "?", "loops": 0, "tasks": 0, "blocked": "?", "command": f"({e})"})
            continue
        try:
            h = src.hello()
        finally:
            src.close()
        loops = h.get("loops") or []
        rows.append(
            {
                "pid": h["pid"],
                "python": h["python"],
                "loops": len(loops),
                "tasks": sum(lp.get("live_tasks", 0) for lp in loops),
                "blocked": "YES" if any(lp.get("blocked") for lp in loops) else "no",
                # sys.argv of the agent's process: spawned workers (uvicorn,
                # multiprocessing) carry their service's argv, not `python -c …`
                "command": " ".join(h.get("argv") or []),
                "socket": ag.path,
            }
        )
    if args.json:
        _print_json({"agents": rows})
        return 0
    if not rows:
        print("no loopscope agents found (start a program with `loopscope run -- python app.py`)", file=sys.stderr)
        return 0
    print(render.agents(rows))
    return 0


def cmd_health(args: argparse.Namespace, src: AgentSource | DumpSource) -> int:
    from .render_health import render_health

    while True:
        report = src.health(args.top)
        if args.json:
            _print_json(report)
        else:
            text = render_health(report)
            if args.watch and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text)
        if not args.watch or src.kind == "dump":
            return 0
        sys.stdout.flush()
        time.sleep(args.interval)


def cmd_run(args: argparse.Namespace) -> int:
    from .run import exec_under_agent

    return exec_under_agent(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo.tour import run_demo

    return run_demo(args)


def cmd_top(args: argparse.Namespace) -> int:
    from ..tui.app import TopApp
    from ..tui.datasource import open_backend

    backend = open_backend(args.target) if args.target else None
    TopApp(args.target, interval=args.interval, backend=backend).run()
    return 0


def _add_top(sub: Any) -> None:
    p = sub.add_parser("top", help="interactive monitor (Textual): tasks, sites, history, health")
    p.add_argument("target", metavar="TARGET", nargs="?", help="pid, agent socket path, or dump file (default: pick a process)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (at least; see docs/architecture.md)")
    p.set_defaults(func=cmd_top, needs_target=False)


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TARGET", help="pid, agent socket path, or dump file")
    p.add_argument("--json", action="store_true", help=f"machine-readable output (schema {SCHEMA_VERSION}, see docs/json.md)")


def _add_list_opts(p: argparse.ArgumentParser, default_sort: str | None = None) -> None:
    p.add_argument("--sort", default=default_sort, help=f"one of {', '.join(SORT_KEYS)}; prefix - to reverse (age: oldest first)")
    p.add_argument(
        "--filter",
        nargs="+",
        metavar="COND",
        help="name=GLOB coro=GLOB state=pending,running site=TEXT min_age=5s (a bare word is a name glob)",
    )
    p.add_argument("--limit", type=int, help="at most this many rows")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopscope", description="top, ps, pstree and a flight recorder for asyncio programs")
    parser.add_argument("--version", action="version", version=f"loopscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a command with the agent in every Python process it starts")
    p.add_argument("--socket-dir", help="where agents put their sockets")
    p.add_argument("--allow-cancel", action="store_true", help="let clients cancel tasks")
    p.add_argument("--history-size", type=int, help="finished tasks kept per outcome")
    p.add_argument("--creation-frames", type=int, help="user frames kept per creation site")
    p.add_argument("--dump-signal", help="signal that writes a dump file (default SIGUSR1, 'none' to disable)")
    p.add_argument("--prometheus", metavar="[HOST:]PORT", help="serve Prometheus metrics on /metrics (default host 127.0.0.1)")
    p.add_argument("--slow-step", type=float, metavar="SECONDS", help="record steps longer than this as blocking (default 0.1)")
    p.add_argument("--no-metrics", action="store_true", help="do not time loop steps (creation tracking and lag only)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS…]")
    p.set_defaults(func=cmd_run, needs_target=False)

    p = sub.add_parser("list", help="agents this user can reach")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list, needs_target=False)

    p = sub.add_parser("ps", help="tasks: own coroutine stack and awaiter chain")
    _add_target(p)
    _add_list_opts(p)
    p.add_argument("-l", "--long", action="store_true", help="add state, age, creation site and waiting-on columns")
    p.add_argument("-w", "--wide", action="store_true", help="never clip a column (long stacks and paths are cut in the middle otherwise)")
    p.set_defaults(func=cmd_ps, needs_target=True)

    p = sub.add_parser("pstree", help="tasks as a tree of who awaits whom")
    _add_target(p)
    p.add_argument("--filter", nargs="+", metavar="COND", help="as for ps")
    p.add_argument("--limit", type=int)
    p.set_defaults(func=cmd_pstree, needs_target=True)

    p = sub.add_parser("inspect", help="one task in detail: stack, waits, awaiters, creation chain, cancellation")
    _add_target(p)
    p.add_argument("task", metavar="TASK", help="task id (0x…) or name")
    p.add_argument("--locals", action="store_true", help="include local variables (repr-truncated)")
    p.set_defaults(func=cmd_inspect, needs_target=True)

    p = sub.add_parser("history", help="finished tasks: done, failed, cancelled")
    _add_target(p)
    _add_list_opts(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cancelled", action="store_true")
    g.add_argument("--failed", action="store_true")
    g.add_argument("--done", action="store_true")
    p.set_defaults(func=cmd_history, needs_target=True)

    p = sub.add_parser("stats", help="live tasks grouped by creation site, name, coroutine or state")
    _add_target(p)
    p.add_argument("--by", default="site", choices=GROUP_KEYS)
    p.add_argument("--filter", nargs="+", metavar="COND")
    p.add_argument("--limit", type=int, help="at most this many groups")
    p.set_defaults(func=cmd_stats, needs_target=True)

    p = sub.add_parser("health", help="loop health: lag, utilisation, step percentiles, blocking steps, executors")
    _add_target(p)
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes with --watch")
    p.add_argument("--top", type=int, default=5, help="busiest tasks to list")
    p.set_defaults(func=cmd_health, needs_target=True)

    p = sub.add_parser("dump", help="write everything the agent knows to a file (readable by every command)")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("-o", "--output", help="file to write (default loopscope-PID-TIME.json)")
    p.set_defaults(func=cmd_dump, needs_target=True, json=False)

    render_waits.add_commands(sub, _add_target)  # primitives, deadlocks, groups, asyncgens

    p = sub.add_parser("demo", help="start the bundled demo service under the agent and open `top` on it")
    p.add_argument("--once", action="store_true", help="print the tour once (ps, pstree, …) and stop the service")
    p.add_argument("--tasks", type=int, default=3000, help="about how many tasks the demo keeps alive")
    p.set_defaults(func=cmd_demo, needs_target=False)
    _add_top(sub)
    return parser


def _join_sort_values(argv: list[str]) -> list[str]:
    """``--sort -age`` → ``--sort=-age``: argparse (before 3.13) takes a
    value starting with '-' for an option, but reversed sorts are written so."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--sort" and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1][1:2].isalpha():
            out.append(f"--sort={argv[i + 1]}")
            i += 2
            continue
        if argv[i] == "--":
            out.extend(argv[i:])
            break
        out.append(argv[i])
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_sort_values(list(sys.argv[1:] if argv is None else argv)))
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        if not args.needs_target:
            return int(args.func(args))
        src = open_target(args.target)
        try:
            return int(args.func(args, src))
        finally:
            src.close()
    except (ClientError, QueryError) as e:
        print(f"loopscope: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
