"""Instructions per unit of work, counted by valgrind: a noise-free view of
where loopscope's overhead goes (wall-clock ratios on a shared 2-core
machine move by 20 % between identical runs; instruction counts do not,
though they move by a few thousand per aiohttp request with the memory
layout: ``--layouts``).

Usage::

    python benchmarks/instructions.py [--workload spawn|pingpong|aiohttp|uvicorn|locks] [--n 20000] [--layouts K] VARIANT...

VARIANT is ``plain``, ``floor``, ``trackfloor[_ends]``, ``floors`` or ``loopscope``, the last followed by
optional switches joined with ``_`` and, after ``@``, another tree's ``src`` directory to take loopscope from
(to compare trees): ``nometrics`` (no step hook),
``nofactory`` (our task factory removed after install: the step hook alone),
``norun`` (asyncio's own ``Handle._run`` restored: the factory alone),
``noprims`` (no primitive tracking), ``nospeedups`` (the Python step hook
instead of the compiled one), ``timers`` (the watchdog, heartbeat
and slow-step defaults, which the other variants push out of the way).  ``floor`` is plain asyncio with the
least a per-step timer can do (two clock reads and one histogram increment
per callback): no exact step metrics can cost less than that.
``trackfloor`` is the same bound for task tracking (see
``_install_tracking_floor``), ``trackfloor_ends`` with end records.
``floors`` is both bounds at once (the step timer and the tracker, no end
records): no implementation of issues 2 and 3 together, in Python, can
cost less.

The ``aiohttp`` workload is a real aiohttp server answering keep-alive
requests from 8 raw clients in the same process (the unit is one request,
client side included); ``uvicorn`` is the same with uvicorn + Starlette.  The ``locks`` workload is ``benchmarks/locks.py``'s;
its unit is one worker round (N is rounded down to whole rounds of all its
workers).  ``--cache-sim`` adds cachegrind's simulated cache misses and a
cycle estimate: what the clock sees and the instruction count does not
(this machine has no hardware counters; BENCHMARKS.md, eighth session).  Each variant runs twice under
``valgrind --tool=cachegrind --cache-sim=no`` (with 0 and with N units);
the difference divided by N is printed.  Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


async def _nop() -> None:
    pass


async def _spawn(n: int) -> None:
    for _ in range(n // 1000):
        await asyncio.gather(*[asyncio.create_task(_nop()) for _ in range(1000)])


async def _pingpong(n: int) -> None:
    pings: asyncio.Queue[int] = asyncio.Queue()
    pongs: asyncio.Queue[int] = asyncio.Queue()

    async def pinger() -> None:
        for i in range(n // 2):
            pings.put_nowait(i)
            await pongs.get()

    async def ponger() -> None:
        for _ in range(n // 2):
            pongs.put_nowait(await pings.get())

    await asyncio.gather(asyncio.create_task(pinger()), asyncio.create_task(ponger()))


async def _raw_client(port: int, count: int) -> None:
    """One keep-alive HTTP/1.1 client: ``count`` GETs, each read whole."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
    writer.close()


async def _aiohttp(n: int) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0)
        return web.json_response({"path": request.path, "items": list(range(20))})

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    clients = 8
    await asyncio.gather(*[_raw_client(port, 50) for _ in range(clients)])  # warm-up, in every count
    await asyncio.gather(*[_raw_client(port, n // clients) for _ in range(clients)])
    await runner.cleanup()


async def _uvicorn(n: int) -> None:
    """uvicorn + Starlette on the running loop, as ``http_wrk.py --app uvicorn`` serves it."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def handler(request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return JSONResponse({"path": request.url.path, "items": list(range(20))})

    config = uvicorn.Config(
        Starlette(routes=[Route("/", handler)]), host="127.0.0.1", port=0, loop="asyncio",
        log_level="warning", access_log=False, lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    clients = 8
    await asyncio.gather(*[_raw_client(port, 50) for _ in range(clients)])  # warm-up, in every count
    await asyncio.gather(*[_raw_client(port, n // clients) for _ in range(clients)])
    server.should_exit = True
    await serving


def _install_floor() -> None:
    """The cheapest exact step timer: what any per-step metric costs at least."""
    import math
    import time

    clock = time.monotonic
    floor = math.floor
    fine = [0] * 1000
    coarse = [0]

    def _run(self: asyncio.events.Handle) -> None:
        t0 = clock()
        try:
            self._context.run(self._callback, *self._args)  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - reported like asyncio does
            self._loop.call_exception_handler({"message": "Exception in callback", "exception": exc, "handle": self})  # type: ignore[attr-defined]
        d = clock() - t0
        if d < 0.001:
            fine[floor(d * 1e6)] += 1
        else:
            coarse[0] += 1
        self = None  # type: ignore[assignment]  # noqa: F841

    asyncio.events.Handle._run = _run  # type: ignore[method-assign]


def _install_tracking_floor(ends: bool) -> None:
    """The least any pure-Python task tracker can do: ``asyncio.create_task``
    replaced by one function that makes a one-slot Task subclass and stores
    the caller's code, offset, parent and time; with ``ends``, a ``__del__``
    that appends one small tuple to a ring.  No creation chain, no names,
    no counters, no error handling: a bound, not a design."""
    import collections
    import time

    getframe = sys._getframe
    running = asyncio.events._get_running_loop
    current = asyncio.current_task
    clock = time.monotonic
    ring: collections.deque = collections.deque(maxlen=1000)
    task_del = asyncio.Task.__del__

    class Slot(asyncio.Task):  # type: ignore[misc]
        __slots__ = ("_o",)

    class Ended(Slot):
        __slots__ = ()

        def __del__(self) -> None:
            ring.append((id(self), self._o, self._state))
            task_del(self)

    cls = Ended if ends else Slot

    def create_task(coro, *, name=None, context=None):  # type: ignore[no-untyped-def]
        loop = running()
        task = cls(coro, loop=loop, name=name, context=context)
        f = getframe(1)
        task._o = (f.f_code, f.f_lasti, current(loop), clock())
        return task

    asyncio.create_task = asyncio.tasks.create_task = create_task  # type: ignore[assignment]


WORKLOADS = {"spawn": _spawn, "pingpong": _pingpong, "aiohttp": _aiohttp, "uvicorn": _uvicorn}


#: Small strings allocated before anything else (``--layouts``), kept alive.
_LAYOUT_SHIFT: list[str] = []


def child(variant: str, workload: str, n: int) -> None:
    _LAYOUT_SHIFT.extend(str(i) * 3 for i in range(int(os.environ.get("INSTRUCTIONS_LAYOUT", "0")) * 37))
    parts = variant.partition("@")[0].split("_")
    if parts[0] in ("floor", "floors"):
        _install_floor()
    if parts[0] in ("trackfloor", "floors"):
        _install_tracking_floor(ends="ends" in parts)
    if parts[0] == "loopscope":
        import loopscope

        # no watchdog/heartbeat wakeups: under valgrind the program runs ~50x
        # slower, and their share would be inflated accordingly
        timers = {} if "timers" in parts else {"watchdog": 1000.0, "heartbeat": 1000.0, "slow_step": 1000.0}
        loopscope.install(
            server=False, dump_signal="", metrics="nometrics" not in parts, primitives="noprims" not in parts,
            speedups="nospeedups" not in parts, **timers,
        )

    async def main() -> None:
        if "nofactory" in parts:
            asyncio.get_running_loop()._task_factory = None  # type: ignore[attr-defined]
        if "norun" in parts:
            from loopscope.agent import steps

            asyncio.events.Handle._run = steps._original_run  # type: ignore[method-assign]
        # Every count (with 0 units too) first ends 1,500 trivial tasks: that
        # spends loopscope's done-ring budget (1,000 history entries a second,
        # Tracker.refill_done), so what is counted is a busy loop's steady
        # state, whatever N is.  Without it the first 1,000 units of each
        # count pay for an entry the rest do not: half of an --n 2000 run.
        await asyncio.gather(*[asyncio.create_task(_nop()) for _ in range(1500)])
        if workload == "locks":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import locks

            locks.ROUNDS = n // locks.WORKERS
            await locks.workload()
        else:
            await WORKLOADS[workload](n)

    asyncio.run(main())


#: cachegrind's summary lines, by what they count
_EVENTS = {"I": r"I\s+refs", "I1": r"I1\s+misses", "D1": r"D1\s+misses", "LLi": r"LLi\s+misses", "LLd": r"LLd\s+misses"}


def count(variant: str, workload: str, n: int, cache_sim: bool = False, layout: int = 0) -> dict[str, int]:
    """Instructions (and with ``cache_sim``, cachegrind's simulated cache
    misses) of one run of ``variant`` with ``n`` units, at memory layout
    ``layout`` (see ``--layouts``)."""
    env = {**os.environ, "PYTHONPATH": variant.partition("@")[2] or str(SRC), "PYTHONHASHSEED": "0", "INSTRUCTIONS_LAYOUT": str(layout)}
    out = subprocess.run(
        # --trace-children: Debian's unpacked 3.14/3.15 are a shell wrapper
        # that execs the interpreter through ld.so
        ["valgrind", "--tool=cachegrind", f"--cache-sim={'yes' if cache_sim else 'no'}", "--trace-children=yes",
         "--cachegrind-out-file=/dev/null", sys.executable, __file__, "--child", variant, workload, str(n)],
        capture_output=True, text=True, env=env, check=True,
    ).stderr
    got = {}
    for key, label in _EVENTS.items():
        counts = re.findall(label + r":\s+([\d,]+)", out)
        if counts:
            got[key] = max(int(c.replace(",", "")) for c in counts)  # the interpreter's, not a wrapper's
    if "I" not in got:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out[-2000:]}")
    return got


def wall(variants: list[str], workload: str, n: int, runs: int) -> int:
    """Microseconds per unit by the clock: each variant's run minus its
    run with 0 units, variants interleaved, median of ``runs``."""
    import time

    def timed(v: str, k: int) -> float:
        env = {**os.environ, "PYTHONPATH": v.partition("@")[2] or str(SRC), "PYTHONHASHSEED": "0"}
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", v, workload, str(k)], env=env, check=True)
        return time.perf_counter() - start

    samples: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(runs):
        for v in variants:
            samples[v].append((timed(v, n) - timed(v, 0)) / n * 1e6)
    base = statistics.median(samples[variants[0]])
    for v in variants:
        med = statistics.median(samples[v])
        print(f"{workload:8s} {v:24s} {med:8.2f} us per unit  {med / base:.2f}x  (min {min(samples[v]):.2f}, max {max(samples[v]):.2f})")
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=[*WORKLOADS, "locks"], default="spawn")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--wall", type=int, metavar="RUNS", help="time the variants instead (RUNS interleaved runs, median), no valgrind")
    ap.add_argument(
        "--cache-sim",
        action="store_true",
        help="also simulate the caches: L1 and last-level misses per unit, and cycles estimated as "
        "instructions + 10 per L1 miss + 100 per last-level miss (for machines without hardware counters)",
    )
    ap.add_argument(
        "--layouts",
        type=int,
        default=1,
        metavar="K",
        help="count each variant at K memory layouts (37, 74, ... small strings allocated first) and print the "
        "median: the interpreter's type-attribute cache is indexed by the addresses of names, so which hot "
        "lookups collide, and a few thousand instructions per request, depend on the layout",
    )
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    if args.wall:
        return wall(args.variants, args.workload, args.n, args.wall)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    n = args.n
    if args.workload == "locks":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from locks import WORKERS

        n -= n % WORKERS
    base: dict[str, float] = {}
    layouts = range(1, args.layouts + 1) if args.layouts > 1 else (0,)
    for v in args.variants:
        each = []
        for layout in layouts:
            full = count(v, args.workload, n, args.cache_sim, layout)
            empty = count(v, args.workload, 0, args.cache_sim, layout)
            each.append({k: (full[k] - empty.get(k, 0)) / n for k in full})
        per = {k: statistics.median(e[k] for e in each) for k in each[0]}
        base = base or per
        line = f"{args.workload:8s} {v:24s} {per['I']:10,.0f} instructions per unit  {per['I'] / base['I']:.2f}x"
        if args.cache_sim:
            cycles = per["I"] + 10 * (per["I1"] + per["D1"]) + 100 * (per["LLi"] + per["LLd"])
            base_cycles = base["I"] + 10 * (base["I1"] + base["D1"]) + 100 * (base["LLi"] + base["LLd"])
            line += (
                f"  I1 {per['I1']:7,.1f}  D1 {per['D1']:7,.1f}  LL {per['LLi'] + per['LLd']:5,.1f}"
                f"  ~cycles {cycles:10,.0f}  {cycles / base_cycles:.2f}x"
            )
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
