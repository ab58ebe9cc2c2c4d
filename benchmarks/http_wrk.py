"""A real server under load: aiohttp or uvicorn with and without loopscope, driven by wrk.

Usage::

    python benchmarks/http_wrk.py [--app aiohttp|uvicorn] [--runs N] [--seconds S] [--connections C] [--together | --interleave] [--markdown]

Needs ``wrk`` (Debian: ``apt-get install wrk``) and aiohttp, or uvicorn and
Starlette (``pip install 'uvicorn[standard]' starlette``: uvicorn then
parses HTTP with httptools; the loop is asyncio's either way).  Each run starts
the server in a fresh process (pinned to CPU 0 when ``taskset`` exists, wrk
to CPU 1, so the two do not fight for one core), warms it up, then measures
``wrk --latency`` for S seconds.  Configurations alternate run by run;
medians are compared.  ``--interleave`` starts each configuration's server
once and loads them one at a time, in turn, every run: the issue's load
(one busy server on its CPU), with the machine's drift over minutes shared
by neighbouring short runs.  ``--together`` loads all the servers at once,
sharing CPU 0: less noise, but each server's caches are flushed by the
others' at every switch, which charges a larger code footprint more than a
server alone on its CPU pays.  ``loopscope`` means everything on: the agent with the
step hook, the watchdog, the socket server, primitive tracking, and the
Prometheus endpoint, scraped once a second during the run the way a
Prometheus server would.

The issue's budget: throughput loss <= 3 %, p99 latency increase <= 5 %.
Besides the medians, each configuration's loss is paired with plain's run
of the same round, and the median of those ratios is given with a 95 %
distribution-free interval (order statistics of the rounds' ratios): the
budget is called met only when the whole interval is inside it, missed
only when the whole interval is outside, and undecided otherwise.  The
interval counts the noise between rounds of one run; a run's drift over
its minutes, shared by its rounds, is not in it: compare several runs.

``--configs`` picks other configurations, to find where a cost comes from:
``ls-noprom`` (no Prometheus endpoint, no scrape), ``ls-pyhook``
(the Python step hook instead of the compiled one), ``ls-noexact`` (3.14+:
eager tasks of loopscope's subclass rather than exact ``asyncio.Task``
objects), ``ls-nometrics`` (no step hook), ``ls-noprims`` (no primitive tracking), ``ls-quiet`` (the watchdog and
heartbeat at 1 s instead of 20/50 ms), ``ls-bare`` (all of those off: task
tracking and the socket server only), and two controls without loopscope:
``idle-thread``, the plain server with one more thread that only sleeps, the
floor any agent with a thread of its own starts from; and ``task-subclass``
(aiohttp only), the plain server whose per-request tasks are of a
``asyncio.Task`` subclass with loopscope's number of slots and nothing else,
the floor of any tracker that records into a Task subclass; ``task-del``,
the same with a ``__del__`` on that class (asyncio's own finaliser called
through it), as loopscope's classes have; and
``step-floor``, the plain server with ``Handle._run`` replaced by the least an
exact step timer can do in C (``step_floor.c``, compiled on first use with
the interpreter's compiler; ``$CPPFLAGS`` is passed on).  With loopscope,
``ls-exact-untracked``: everything on and scraped, but the server's tasks
left exact ``asyncio.Task`` objects and untracked, the ceiling of tracking
them as exact tasks.  ``CONFIG@DIR``
runs a configuration with loopscope from another tree's ``src`` directory,
to compare trees side by side.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

#: ``idle-thread`` runs the plain server with one more thread that only
#: sleeps: the control for what any thread costs a process (a second thread
#: turns off glibc's single-thread fast paths, and the agent has threads).
IDLE_THREAD = """
import os, threading, time
if os.environ.get("WRK_IDLE_THREAD"):
    threading.Thread(target=time.sleep, args=(10**6,), daemon=True).start()
"""

#: ``task-subclass``: aiohttp's per-request task (``asyncio.create_task(...,
#: eager_start=True)`` on 3.14, ``asyncio.Task(...)`` on 3.12 and 3.13) of
#: a subclass with as many slots as loopscope's eager class, made the way
#: loopscope makes it (aiohttp's module gets its own view of asyncio), and
#: no recording at all: asyncio's C task code takes its fast paths only for
#: exact Tasks, whatever the subclass does.
TASK_SUBCLASS = """
if os.environ.get("WRK_TASK_SUBCLASS"):
    import asyncio, types
    import aiohttp.web_protocol

    class Task(asyncio.Task):
        __slots__ = tuple(f"_slot{i}" for i in range(15))

    if os.environ.get("WRK_TASK_DEL"):
        # task-del: the same class with a __del__ (asyncio's own finaliser
        # through it), as loopscope's classes have
        Task.__del__ = asyncio.Task.__del__

    view = types.ModuleType("asyncio")
    view.__dict__.update(vars(asyncio))
    view.Task = Task
    aiohttp.web_protocol.asyncio = view
    _create_task = asyncio.create_task

    def create_task(coro, **kwargs):
        if kwargs.get("eager_start"):
            return Task(coro, loop=asyncio.get_running_loop(), **kwargs)
        return _create_task(coro, **kwargs)

    asyncio.create_task = view.create_task = create_task
"""

#: ``step-floor``: asyncio's ``Handle._run`` replaced by the least an exact
#: per-step timer can do in C (two clock reads, a busy sum and a histogram
#: increment in a C array: ``benchmarks/step_floor.c``, built on first use),
#: nothing else: the floor of any exact step metric on this server.
STEP_FLOOR = """
if os.environ.get("WRK_STEP_FLOOR"):
    import asyncio, sys
    sys.path.insert(0, os.environ["WRK_STEP_FLOOR"])
    import step_floor
    asyncio.events.Handle._run = step_floor.Run(asyncio.events.Handle)
"""

#: ``ls-exact-untracked``: everything on, but aiohttp's tasks (one per
#: request, one per connection) are made exact ``asyncio.Task`` objects that
#: loopscope does not track (aiohttp's view of asyncio gets the real ``Task``
#: back, and a ``create_task`` that makes eager tasks with it).  The ceiling
#: of any design that tracks those tasks as exact ``asyncio.Task`` objects
#: with their records beside them: only the recording can be added to it.
#: On uvicorn the server's loop gets a factory of exact, untracked tasks
#: once the server is up (see its ``Server.startup``): every task it makes
#: from then on is a plain ``asyncio.Task``.
EXACT_UNTRACKED = """
if os.environ.get("WRK_EXACT_UNTRACKED"):
    import asyncio
    import aiohttp.web_protocol

    _view = aiohttp.web_protocol.asyncio
    _view_create_task = _view.create_task
    _view.__dict__["Task"] = asyncio.tasks.Task

    def _exact_create_task(coro, **kwargs):
        if kwargs.get("eager_start"):
            return asyncio.tasks.Task(coro, loop=asyncio.get_running_loop(), **kwargs)
        return _view_create_task(coro, **kwargs)

    _view.__dict__["create_task"] = _exact_create_task
"""

#: ``WRK_NO_DONE_RING`` (server_cache.py, under valgrind): loopscope's ring
#: of finished tasks keeps 100 clean ends a second in full (a Python call
#: each).  A real server at 20,000 requests a second records 0.5 % of them;
#: one slowed 50x by valgrind records a third, which would be counted as
#: the cost of every request.  Emptied here, as a real server's is in effect.
NO_DONE_RING = """
if os.environ.get("WRK_NO_DONE_RING"):
    from loopscope.agent import core
    core.current().tracker.done_rate = 0.0
    core.current().tracker.done_budget[0] = 0
"""

APPS = {
    "aiohttp": IDLE_THREAD + TASK_SUBCLASS + STEP_FLOOR + NO_DONE_RING + EXACT_UNTRACKED + '''
import asyncio, json, sys
from aiohttp import web

async def handler(request):
    # a little of what a real handler does: an await, some work, JSON out
    await asyncio.sleep(0)
    body = json.dumps({"path": request.path, "items": list(range(20))})
    return web.Response(text=body, content_type="application/json")

app = web.Application()
app.router.add_get("/", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=lambda *a: print("READY", flush=True))
''',
    # uvicorn on the default asyncio loop (the budget's loop), with httptools
    # when it is installed (uvicorn[standard]), else h11
    "uvicorn": IDLE_THREAD + STEP_FLOOR + NO_DONE_RING + '''
import asyncio, os, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def handler(request):
    await asyncio.sleep(0)
    return JSONResponse({"path": request.url.path, "items": list(range(20))})

app = Starlette(routes=[Route("/", handler)])

class Server(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        if os.environ.get("WRK_EXACT_UNTRACKED"):
            # ls-exact-untracked: a factory that makes exact asyncio.Task
            # objects, untracked, under the name loopscope's heartbeat takes
            # for its own (it would put its factory back in place of None)
            def loopscope_task_factory(loop, coro, **kwargs):
                return asyncio.tasks.Task(coro, loop=loop, **kwargs)

            loop = asyncio.get_running_loop()
            loop._task_factory = loopscope_task_factory
            loop._loopscope_fast = None  # agent/spawn.py's path past the factory
        print("READY", flush=True)

config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), loop="asyncio", log_level="warning", access_log=False, lifespan="off")
Server(config).run()
''',
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []


def parse_wrk(out: str) -> tuple[float, float]:
    """(requests per second, p99 latency in ms) from ``wrk --latency``."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    if m is None:
        raise ValueError(f"no p99 in wrk output:\n{out}")
    value, unit = float(m.group(1)), m.group(2)
    return rps, value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


#: LOOPSCOPE_* settings of each configuration besides "plain"
VARIANTS: dict[str, dict[str, str]] = {
    "loopscope": {},
    "ls-noprom": {},
    "ls-pyhook": {"SPEEDUPS": "0"},
    "ls-nometrics": {"METRICS": "0"},
    "ls-noprims": {"PRIMITIVES": "0"},
    "ls-quiet": {"WATCHDOG": "1", "HEARTBEAT": "1"},
    "ls-bare": {"METRICS": "0", "PRIMITIVES": "0", "WATCHDOG": "1", "HEARTBEAT": "1"},
    "ls-noexact": {"EXACT_TASKS": "0"},
    "ls-exact-untracked": {},  # see EXACT_UNTRACKED
}


#: The app's own switches (the ``WRK_*`` preambles above) each
#: configuration turns on; ``server_cache.py`` sets the same.
SWITCHES: dict[str, dict[str, str]] = {
    "idle-thread": {"WRK_IDLE_THREAD": "1"},
    "task-subclass": {"WRK_TASK_SUBCLASS": "1"},
    "task-del": {"WRK_TASK_SUBCLASS": "1", "WRK_TASK_DEL": "1"},
    "ls-exact-untracked": {"WRK_EXACT_UNTRACKED": "1"},
}
#: The configurations whose Prometheus endpoint is scraped during the run.
SCRAPED = ("loopscope", "ls-exact-untracked")


def build_step_floor() -> str:
    """Compile ``step_floor.c`` for this interpreter (once, into a cache
    directory) and return the directory to import it from.  ``$CPPFLAGS``
    is passed on, for interpreters whose headers are elsewhere (.ci/run)."""
    import shlex
    import sysconfig

    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    out = Path(tempfile.gettempdir()) / f"loopscope-step-floor-{suffix.strip('.').replace('.', '-')}"
    target = out / f"step_floor{suffix}"
    source = Path(__file__).resolve().parent / "step_floor.c"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        out.mkdir(exist_ok=True)
        cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
        flags = shlex.split(os.environ.get("CPPFLAGS", ""))
        subprocess.run([*cc, "-O2", "-fPIC", "-shared", *flags, f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(target)], check=True)
    return str(out)


class Server:
    """One server process for one configuration, pinned to CPU 0."""

    def __init__(self, config: str, app: str) -> None:
        self.config = config
        # CONFIG@DIR: the same configuration with loopscope from another
        # source tree (DIR is its src/), to compare trees side by side
        config, _, src = config.partition("@")
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSCOPE_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src or str(SRC), env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, app, str(self.port)]
        self.scrape_port: int | None = None
        self.scraping = False
        self.sockdir: str | None = None  # the agent's socket directory, removed by close()
        env.update(SWITCHES.get(config, {}))
        if config == "step-floor":
            env["WRK_STEP_FLOOR"] = build_step_floor()
        elif config in VARIANTS:
            sockdir = self.sockdir = tempfile.mkdtemp(prefix="ls-wrk-")
            os.chmod(sockdir, 0o700)
            env["LOOPSCOPE_SOCKET_DIR"] = sockdir
            env.update({"LOOPSCOPE_" + k: v for k, v in VARIANTS[config].items()})
            prom: list[str] = []
            if config in SCRAPED:
                self.scrape_port = free_port()
                prom = ["--prometheus", f"127.0.0.1:{self.scrape_port}"]
            cmd = [sys.executable, "-m", "loopscope", "run", *prom, "--", *cmd]
        # taskset and ``loopscope run`` both exec: the pid is the server's
        self.proc = subprocess.Popen(pin(0) + cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.stop = threading.Event()
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "READY" not in line:
            self.close()
            raise RuntimeError(f"{config}: server did not start")
        self.url = f"http://127.0.0.1:{self.port}/"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole process so far (threads that
        ended included), from /proc; NaN where there is none."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def start_scraping(self) -> None:
        """Prometheus scrapes /metrics once a second during the run (and on,
        from the first run: servers loaded in turn are scraped throughout)."""
        if self.scraping:
            return
        self.scraping = True

        def scrape() -> None:
            while not self.stop.wait(1.0):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{self.scrape_port}/metrics", timeout=2).read()
                except (OSError, http.client.HTTPException):
                    pass  # the server is being stopped at the end of the run

        if self.scrape_port is not None:
            threading.Thread(target=scrape, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.sockdir is not None:
            shutil.rmtree(self.sockdir, ignore_errors=True)


#: one measurement: req/s, p99 ms, server CPU µs per request, server CPU share
Result = tuple[float, float, float, float]


def measure(servers: list[Server], seconds: float, connections: int, warm_up: bool = True) -> list[Result]:
    """wrk against every server at once (one wrk per server, all on CPU 1)
    after a warm-up; with one server this is the usual sequential run."""
    warm = [subprocess.Popen(pin(1) + ["wrk", "-t1", f"-c{connections}", "-d2s", s.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for s in servers if warm_up]
    for w in warm:
        w.wait()
    for s in servers:
        s.start_scraping()
    cpu0 = [s.cpu_seconds() for s in servers]
    t0 = time.monotonic()
    runs = [
        subprocess.Popen(pin(1) + ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", s.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in servers
    ]
    outs = [r.communicate()[0] for r in runs]
    elapsed = time.monotonic() - t0
    cpu1 = [s.cpu_seconds() for s in servers]
    results = []
    for out, c0, c1 in zip(outs, cpu0, cpu1):
        rps, p99 = parse_wrk(out)
        results.append((rps, p99, (c1 - c0) / (rps * seconds) * 1e6, (c1 - c0) / elapsed))
    return results


def one_round(configs: list[str], app: str, seconds: float, connections: int, together: bool) -> dict[str, Result]:
    if not together:
        out = {}
        for config in configs:
            server = Server(config, app)
            try:
                out[config] = measure([server], seconds, connections)[0]
            finally:
                server.close()
        return out
    servers: list[Server] = []
    try:
        for config in configs:
            servers.append(Server(config, app))
        return dict(zip(configs, measure(servers, seconds, connections)))
    finally:
        for server in servers:
            server.close()


def interleaved(configs: list[str], app: str, runs: int, seconds: float, connections: int) -> dict[str, list[Result]]:
    """Every configuration's server started once, then loaded one at a time,
    in turn, ``runs`` times (the order rotated each round).  The load is the
    issue's (one server busy on its CPU, wrk on the other), and a drift of
    the machine's speed over minutes falls on neighbouring short runs of
    every configuration alike, so the paired ratios are tight."""
    servers = []
    results: dict[str, list[Result]] = {c: [] for c in configs}
    try:
        for config in configs:
            servers.append(Server(config, app))
        for s in servers:
            subprocess.run(pin(1) + ["wrk", "-t1", f"-c{connections}", "-d2s", s.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(runs):
            order = servers[i % len(servers):] + servers[: i % len(servers)]
            for s in order:
                results[s.config].append(measure([s], seconds, connections, warm_up=False)[0])
            print(f"run {i + 1}/{runs}: " + ", ".join(f"{c} {r[-1][0]:.0f} req/s p99 {r[-1][1]:.2f} ms {r[-1][2]:.1f} us/req" for c, r in results.items()), file=sys.stderr)
    finally:
        for s in servers:
            s.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument(
        "--together",
        action="store_true",
        help="run the configurations' servers at the same time, sharing CPU 0 (one wrk each on CPU 1): "
        "the machine's noise then falls on all of them alike",
    )
    ap.add_argument(
        "--interleave",
        action="store_true",
        help="start each configuration's server once and load them one at a time, in turn, every run "
        "(the issue's load, with the machine's drift shared by neighbouring runs)",
    )
    ap.add_argument("--app", choices=sorted(APPS), default="aiohttp", help="the server: aiohttp, or uvicorn+Starlette on the asyncio loop")
    ap.add_argument("--configs", default="plain,loopscope", help=f"comma-separated, from plain, idle-thread, task-subclass, task-del, step-floor, {', '.join(VARIANTS)}")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix="_app.py", delete=False) as f:
        f.write(APPS[args.app])
        app = f.name
    configs = args.configs.split(",")
    unknown = [c for c in (c.partition("@")[0] for c in configs) if c not in ("plain", "idle-thread", "task-subclass", "task-del", "step-floor") and c not in VARIANTS]
    if {"task-subclass", "task-del"} & set(configs) and args.app != "aiohttp":
        print("--configs: task-subclass and task-del are controls for aiohttp only", file=sys.stderr)
        return 2
    if unknown or "plain" not in configs:
        print(f"--configs: needs plain, and only known names (unknown: {', '.join(unknown) or 'none'})", file=sys.stderr)
        return 2
    results: dict[str, list[Result]] = {c: [] for c in configs}
    try:
        if args.interleave:
            results = interleaved(configs, app, args.runs, args.seconds, args.connections)
        for i in range(0 if args.interleave else args.runs):
            for config, result in one_round(configs, app, args.seconds, args.connections, args.together).items():
                results[config].append(result)
            print(
                f"run {i + 1}/{args.runs}: "
                + ", ".join(f"{c} {r[-1][0]:.0f} req/s p99 {r[-1][1]:.2f} ms {r[-1][2]:.1f} us/req cpu {r[-1][3]:.0%}" for c, r in results.items()),
                file=sys.stderr,
            )
    finally:
        os.unlink(app)
    med = {c: (statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)) for c, r in results.items()}
    mode = "servers side by side on one CPU" if args.together else "servers loaded in turn" if args.interleave else "configurations one after another"
    head = f"Python {platform.python_version()}, {args.app}, wrk -t1 -c{args.connections} -d{args.seconds:g}s, {args.runs} runs ({mode}), medians"
    if args.markdown:
        print(head + "\n")
        print("| config | req/s (median) | p99 ms (median) | server CPU µs/request (median) | all req/s |\n| --- | ---: | ---: | ---: | --- |")
        for c, r in results.items():
            print(f"| {c} | {med[c][0]:.0f} | {med[c][1]:.2f} | {statistics.median(x[2] for x in r):.1f} | {', '.join(f'{x[0]:.0f}' for x in r)} |")
        print()
    else:
        print(head)
        for c, r in results.items():
            print(f"{c:12s} {med[c][0]:8.0f} req/s  p99 {med[c][1]:6.2f} ms  {statistics.median(x[2] for x in r):6.1f} us CPU/request")
    for c in configs[1:]:
        loss = 1 - med[c][0] / med["plain"][0]
        p99 = med[c][1] / med["plain"][1] - 1
        print(f"{c}: throughput loss {loss * 100:.1f} % (budget 3 %), p99 increase {p99 * 100:.1f} % (budget 5 %)")
    # Paired: each run of a configuration against the plain run of the same
    # round, which the machine's slow drifts (a neighbour's load coming and
    # going over minutes) disturbed alike; the median of those ratios.
    for c in configs[1:]:
        for line in paired_report(c, list(zip(results[c], results["plain"]))):
            print(line)
    return 0


def paired_report(label: str, pairs: list[tuple[tuple[float, ...], tuple[float, ...]]]) -> list[str]:
    """Each round of a configuration against the baseline's round beside it:
    the medians of those ratios, then their 95 % intervals with a verdict on
    the budgets (also pooled.py's report)."""
    loss = [1 - x[0] / b[0] for x, b in pairs]
    p99 = [x[1] / b[1] - 1 for x, b in pairs]
    cpu = [x[2] / b[2] - 1 for x, b in pairs]
    out = [
        f"{label}, paired by round: throughput loss {statistics.median(loss) * 100:.1f} %, "
        f"p99 increase {statistics.median(p99) * 100:.1f} %, CPU per request {statistics.median(cpu) * 100:+.1f} %"
    ]
    il, ip = median_interval(loss), median_interval(p99)
    if il is not None and ip is not None:
        out.append(
            f"{label}, 95 % interval of the paired median: throughput loss {il[0] * 100:.1f} .. {il[1] * 100:.1f} % "
            f"({verdict(il, 0.03)}), p99 increase {ip[0] * 100:.1f} .. {ip[1] * 100:.1f} % ({verdict(ip, 0.05)})"
        )
    return out


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of ``values``:
    the order statistics ``k`` and ``n - k + 1`` with ``k`` the largest for
    which a Binomial(n, 1/2) falls below ``k`` with probability at most
    ``(1 - confidence) / 2``.  It assumes nothing of the noise's shape (this
    machine's is lopsided: a neighbour's burst slows a round, never speeds
    it), only that the rounds are independent.  None under 6 values, too few
    for a 95 % interval."""
    n = len(values)
    tail = (1 - confidence) / 2
    below, k = 0.0, 0
    while True:
        below += math.comb(n, k) / 2**n  # P(Binomial(n, 1/2) <= k)
        if below > tail:
            break
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]


def verdict(interval: tuple[float, float], budget: float) -> str:
    """Within the budget only when the whole interval is."""
    if interval[1] <= budget:
        return "within the budget"
    if interval[0] > budget:
        return "over the budget"
    return "undecided: more rounds"


if __name__ == "__main__":
    raise SystemExit(main())
