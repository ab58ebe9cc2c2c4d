"""Overhead of loopscope (and of the alternatives) on asyncio-heavy workloads.

Usage::

    python benchmarks/run.py [--runs N] [--workload spawn|pingpong|all]
                             [--configs NAME ...] [--markdown]

Every measurement runs in a fresh child process (``run.py --child WORKLOAD
CONFIG`` prints the seconds the workload took), so an install can never leak
from one configuration into the next, and every configuration pays the same
import and warm-up costs outside the timed region.  Only the workload itself
is timed, with ``perf_counter`` inside the running loop (``--clock cpu``:
``process_time``, which time taken by other processes does not inflate).

Configurations are interleaved (A, B, C, ..., then A, B, C again) so that a
noisy neighbour or a thermal change hits all of them alike, and the median of
the runs is reported.  Ratios compare medians to the baseline on the *same*
loop: the default-loop configurations to ``plain``, the uvloop ones to
``uvloop``.

Children use the interpreter this script is run with, and ``src/`` is put on
their ``PYTHONPATH`` so the working tree's loopscope is measured even when it
is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"

TASKS = 200_000
BATCH = 1_000
MESSAGES = 200_000
#: The issue's budget for task tracking on the spawn workload.
TARGET = 1.25
CHILD_TIMEOUT = 900.0


async def nop() -> None:
    pass


async def spawn() -> None:
    """Task creation is loopscope's hot path: this is its worst case.

    Each task does nothing, so the time is almost all create_task, the first
    step, completion and release, which is exactly where a monitor's task
    factory and end-of-task hooks sit.
    """
    for _ in range(TASKS // BATCH):
        await asyncio.gather(*[asyncio.create_task(nop()) for _ in range(BATCH)])


async def pingpong() -> None:
    """Steady-state loop traffic with almost no task creation.

    Two long-lived tasks exchange MESSAGES messages in total (MESSAGES // 2
    pings, each answered by a pong) through two queues.  A monitor that only
    hooks task creation should cost nothing here; one that hooks every loop
    step (asyncio debug mode) shows up.
    """
    pings: asyncio.Queue[int] = asyncio.Queue()
    pongs: asyncio.Queue[int] = asyncio.Queue()
    rounds = MESSAGES // 2

    async def pinger() -> None:
        for i in range(rounds):
            pings.put_nowait(i)
            await pongs.get()

    async def ponger() -> None:
        for _ in range(rounds):
            pongs.put_nowait(await pings.get())

    await asyncio.gather(asyncio.create_task(pinger()), asyncio.create_task(ponger()))


async def request() -> None:
    """What a server does per request: yield once, like a handler's await."""
    await asyncio.sleep(0)


async def eager() -> None:
    """Eager tasks, the way aiohttp makes one per request (3.12+).

    Each task runs its first step inside ``create_task`` and suspends once,
    so the time is the constructor, two steps and the release: on 3.14+
    ``create_task(coro, eager_start=True)``, before that the loop's
    ``asyncio.eager_task_factory`` (set after loopscope, which wraps it, as
    it would a program's own).  Not on 3.11, which has no eager tasks.
    """
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 14):
        make: Callable[[], Any] = lambda: asyncio.create_task(request(), eager_start=True)  # noqa: E731
    elif sys.version_info >= (3, 12):
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        make = lambda: asyncio.create_task(request())  # noqa: E731
    else:
        raise Skip("eager tasks are new in Python 3.12")
    for _ in range(TASKS // BATCH):
        await asyncio.gather(*[make() for _ in range(BATCH)])


WORKLOADS: dict[str, Callable[[], Awaitable[None]]] = {"spawn": spawn, "pingpong": pingpong, "eager": eager}


@dataclass(frozen=True)
class Config:
    """One way of running a workload."""

    loop: str  # "asyncio" (the default loop) or "uvloop"
    monitor: str  # "none", "loopscope", "loopscope-tracking", "loopscope-pyhook", "loopscope+server" or "aiomonitor"
    debug: bool = False

    @property
    def baseline(self) -> str:
        return "uvloop" if self.loop == "uvloop" else "plain"


CONFIGS: dict[str, Config] = {
    "plain": Config("asyncio", "none"),
    "loopscope": Config("asyncio", "loopscope"),
    "pyhook": Config("asyncio", "loopscope-pyhook"),
    "loopscope+server": Config("asyncio", "loopscope+server"),
    "tracking": Config("asyncio", "loopscope-tracking"),
    "notimers": Config("asyncio", "loopscope-notimers"),
    "noprims": Config("asyncio", "loopscope-noprims"),
    "noexact": Config("asyncio", "loopscope-noexact"),
    "aiomonitor": Config("asyncio", "aiomonitor"),
    "debug": Config("asyncio", "none", debug=True),
    "uvloop": Config("uvloop", "none"),
    "uvloop+loopscope": Config("uvloop", "loopscope"),
    "uvloop+aiomonitor": Config("uvloop", "aiomonitor"),
}


class Skip(Exception):
    """A configuration that cannot run on this interpreter (a missing package)."""


# -- child: one measurement ----------------------------------------------------


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Skip(f"{module} is not importable: {e}") from None


def _factory_in_use(loop: Any) -> Any:
    """The factory the loop really calls: loopscope hides its own from
    ``get_task_factory`` (the program must see what it set), so ask it."""
    try:
        from loopscope.agent.loops import real_factory
    except ImportError:
        return loop.get_task_factory()
    return real_factory(loop)


#: What a child reads around the workload: ``perf_counter`` (wall), or
#: ``process_time`` (the CPU time of every thread of the process: on a shared
#: machine, time the neighbours take from it is not counted, while the
#: agent's own threads are).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


async def _timed(workload: Callable[[], Awaitable[None]], config: Config, aiomonitor: Any, clock: Callable[[], float]) -> float:
    loop = asyncio.get_running_loop()
    monitor = None
    if aiomonitor is not None:
        monitor = aiomonitor.start_monitor(loop, hook_task_factory=True, port=0, webui_port=0, console_port=0)
    try:
        hooked = _factory_in_use(loop) is not None
        if hooked != (config.monitor != "none"):
            raise RuntimeError(f"task factory is {_factory_in_use(loop)!r} under {config}")
        start = clock()
        await workload()
        return clock() - start
    finally:
        if monitor is not None:
            monitor.close()


def measure(workload: str, config: Config, clock: str = "wall") -> float:
    """Run ``workload`` once under ``config`` in this process; seconds taken."""
    aiomonitor = _require("aiomonitor") if config.monitor == "aiomonitor" else None
    loopscope = None
    if config.monitor.startswith("loopscope"):
        loopscope = _require("loopscope")
        options: dict[str, Any] = {"server": config.monitor == "loopscope+server", "dump_signal": ""}
        if config.monitor == "loopscope-tracking":
            # Issue 2's budget: task tracking only (creation sites, parents,
            # ends and cancellations), no step timing and no primitives.
            options.update(metrics=False, primitives=False)
        if config.monitor == "loopscope-pyhook":
            # everything on, with the Python step hook instead of the compiled one
            options.update(speedups=False)
        if config.monitor == "loopscope-notimers":
            # everything on but the watchdog's and the heartbeat's wake-ups,
            # pushed out of the run (what instructions.py measures)
            options.update(watchdog=1000.0, heartbeat=1000.0)
        if config.monitor == "loopscope-noexact":
            # everything on, eager tasks of loopscope's subclass (3.14+:
            # exact asyncio.Task objects otherwise, sixteenth session)
            options.update(exact_tasks=False)
        if config.monitor == "loopscope-noprims":
            # everything on but primitive tracking (locks, queues, events)
            options.update(primitives=False)
        loopscope.install(**options)
    try:
        # uvloop copies asyncio._set_running_loop when it is imported, so it
        # must come after loopscope.install(), like in `loopscope run`.
        factory = _require("uvloop").new_event_loop if config.loop == "uvloop" else None
        with asyncio.Runner(debug=config.debug, loop_factory=factory) as runner:
            return runner.run(_timed(WORKLOADS[workload], config, aiomonitor, CLOCKS[clock]))
    finally:
        if loopscope is not None:
            loopscope.uninstall()


def child(workload: str, name: str, clock: str) -> None:
    try:
        print(f"{measure(workload, CONFIGS[name], clock):.6f}")
    except Skip as e:
        print(f"skip: {e}")


# -- parent: interleaved runs in fresh processes -------------------------------


def _child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LOOPSCOPE_") and k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return env


def run_child(workload: str, name: str, env: dict[str, str], clock: str = "wall") -> float | str:
    """Seconds, or why the configuration was not measured.

    A child that crashes does not stop the run: third-party monitors break on
    some interpreter and loop combinations, and the other configurations are
    still worth having.  The crash is echoed to stderr and reported.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", workload, name, "--clock", clock]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT)
    out = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not out:
        print(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}", file=sys.stderr)
        errors = [line for line in proc.stderr.splitlines() if line and not line.startswith((" ", "<sys>"))]
        return f"failed: {errors[-1] if errors else f'exit status {proc.returncode}'}"
    last = out[-1]
    return last[len("skip: ") :] if last.startswith("skip: ") else float(last)


@dataclass
class Row:
    workload: str
    config: str
    times: list[float]
    ratio: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def bench(workload: str, names: list[str], runs: int, env: dict[str, str], clock: str = "wall") -> tuple[list[Row], dict[str, str]]:
    times: dict[str, list[float]] = {n: [] for n in names}
    skipped: dict[str, str] = {}
    for run in range(runs):
        for name in names:
            if name in skipped:
                continue
            result = run_child(workload, name, env, clock)
            if isinstance(result, str):
                skipped[name] = result
            else:
                times[name].append(result)
        print(f"  {workload}: run {run + 1}/{runs} done", file=sys.stderr, flush=True)
    rows = {n: Row(workload, n, t) for n, t in times.items() if n not in skipped}
    for row in rows.values():
        base = rows.get(CONFIGS[row.config].baseline)
        if base is not None:
            row.ratio = row.median / base.median
    return list(rows.values()), {f"{workload} {n}": reason for n, reason in skipped.items()}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> str:
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.executable}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"uvloop {_version('uvloop')}, aiomonitor {_version('aiomonitor')}"
    )


def render(rows: list[Row], markdown: bool) -> str:
    header = ["workload", "config", "median s", "ratio", "min s", "max s"]
    body = [
        [
            r.workload,
            r.config,
            f"{r.median:.3f}",
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            f"{min(r.times):.3f}",
            f"{max(r.times):.3f}",
        ]
        for r in rows
    ]
    if markdown:
        lines = [header, ["---", "---", "---:", "---:", "---:", "---:"], *body]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in [header, *body])


#: The issues' budgets: (config, workload) -> the highest ratio allowed.
#: Issue 2: task tracking alone on spawn; issue 3: everything on.
TARGETS: dict[tuple[str, str], float] = {
    ("tracking", "spawn"): TARGET,
    ("loopscope", "spawn"): 1.4,
    ("loopscope", "pingpong"): 1.2,
    ("uvloop+loopscope", "spawn"): 1.6,
    ("uvloop+loopscope", "pingpong"): 1.3,
}


def verdicts(rows: list[Row]) -> list[str]:
    """Each measured configuration against its issue's budget."""
    out = []
    for r in rows:
        target = TARGETS.get((r.config, r.workload))
        if target is not None and r.ratio is not None:
            status = "met" if r.ratio <= target else "NOT MET"
            out.append(f"target {r.config} on {r.workload} <= {target:.2f}x: {status} ({r.ratio:.2f}x)")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per configuration (median reported; default 7)")
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), metavar="CONFIG", help=f"any of: {' '.join(CONFIGS)} (baselines are added)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall: elapsed time (default); cpu: the process's CPU time, all threads, which a noisy neighbour does not inflate",
    )
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        workload, name = args.child
        if workload not in WORKLOADS or name not in CONFIGS:
            parser.error(f"unknown workload or config: {workload} {name}")
        child(workload, name, args.clock)
        return
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    wanted = set(args.configs) | {CONFIGS[n].baseline for n in args.configs}
    names = [n for n in CONFIGS if n in wanted]
    workloads = list(WORKLOADS) if args.workload == "all" else [args.workload]
    env = _child_env()
    started = time.strftime("%Y-%m-%d %H:%M")
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    for workload in workloads:
        got, skips = bench(workload, names, args.runs, env, args.clock)
        rows += got
        skipped.update(skips)

    print(f"{environment()}")
    clock = "wall clock" if args.clock == "wall" else "CPU time of the process"
    print(f"{started}; {clock}, median of {args.runs} interleaved runs, each in a fresh process; ratio vs plain on the same loop (uvloop rows: vs uvloop)")
    print()
    print(render(rows, args.markdown))
    print()
    for name, reason in skipped.items():
        print(f"not measured: {name}: {reason}")
    for line in verdicts(rows):
        print(line)


if __name__ == "__main__":
    main()
