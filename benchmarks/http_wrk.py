"""A real server under load: aiohttp with and without loopscope, driven by wrk.

Usage::

    python benchmarks/http_wrk.py [--runs N] [--seconds S] [--connections C] [--markdown]

Needs ``wrk`` (Debian: ``apt-get install wrk``) and aiohttp.  Each run starts
the server in a fresh process (pinned to CPU 0 when ``taskset`` exists, wrk
to CPU 1, so the two do not fight for one core), warms it up, then measures
``wrk --latency`` for S seconds.  Configurations alternate run by run;
medians are compared.  ``loopscope`` means everything on: the agent with the
step hook, the watchdog, the socket server, primitive tracking, and the
Prometheus endpoint, scraped once a second during the run the way a
Prometheus server would.

The issue's budget: throughput loss <= 3 %, p99 latency increase <= 5 %.

``--configs`` picks other configurations, to find where a cost comes from:
``ls-noprom`` (no Prometheus endpoint, no scrape), ``ls-pyhook``
(the Python step hook instead of the compiled one), ``ls-nometrics`` (no step
hook), ``ls-noprims`` (no primitive tracking), ``ls-quiet`` (the watchdog and
heartbeat at 1 s instead of 20/50 ms), ``ls-bare`` (all of those off: task
tracking and the socket server only).
"""

from __future__ import annotations

import argparse
import http.client
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

APP = '''
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
'''


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
}


def one_run(config: str, app: str, seconds: float, connections: int) -> tuple[float, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSCOPE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, app, str(port)]
    scrape_port = None
    if config != "plain":
        sockdir = tempfile.mkdtemp(prefix="ls-wrk-")
        os.chmod(sockdir, 0o700)
        env["LOOPSCOPE_SOCKET_DIR"] = sockdir
        env.update({"LOOPSCOPE_" + k: v for k, v in VARIANTS[config].items()})
        prom: list[str] = []
        if config == "loopscope":
            scrape_port = free_port()
            prom = ["--prometheus", f"127.0.0.1:{scrape_port}"]
        cmd = [sys.executable, "-m", "loopscope", "run", *prom, "--", *cmd]
    server = subprocess.Popen(pin(0) + cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stop = threading.Event()
    try:
        line = server.stdout.readline() if server.stdout else ""
        if "READY" not in line:
            raise RuntimeError(f"{config}: server did not start")
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(pin(1) + ["wrk", "-t1", f"-c{connections}", "-d2s", url], capture_output=True, check=True)

        def scrape() -> None:
            while scrape_port is not None and not stop.wait(1.0):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{scrape_port}/metrics", timeout=2).read()
                except (OSError, http.client.HTTPException):
                    pass  # the server is being stopped at the end of the run

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        out = subprocess.run(
            pin(1) + ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
            capture_output=True, text=True, check=True,
        ).stdout
        return parse_wrk(out)
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--configs", default="plain,loopscope", help=f"comma-separated, from plain, {', '.join(VARIANTS)}")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix="_app.py", delete=False) as f:
        f.write(APP)
        app = f.name
    configs = args.configs.split(",")
    unknown = [c for c in configs if c != "plain" and c not in VARIANTS]
    if unknown or "plain" not in configs:
        print(f"--configs: needs plain, and only known names (unknown: {', '.join(unknown) or 'none'})", file=sys.stderr)
        return 2
    results: dict[str, list[tuple[float, float]]] = {c: [] for c in configs}
    try:
        for i in range(args.runs):
            for config in results:
                results[config].append(one_run(config, app, args.seconds, args.connections))
            print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{c} {r[-1][0]:.0f} req/s p99 {r[-1][1]:.2f} ms" for c, r in results.items()), file=sys.stderr)
    finally:
        os.unlink(app)
    med = {c: (statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)) for c, r in results.items()}
    head = f"Python {platform.python_version()}, aiohttp, wrk -t1 -c{args.connections} -d{args.seconds:g}s, {args.runs} runs, medians"
    if args.markdown:
        print(head + "\n")
        print("| config | req/s (median) | p99 ms (median) | all req/s |\n| --- | ---: | ---: | --- |")
        for c, r in results.items():
            print(f"| {c} | {med[c][0]:.0f} | {med[c][1]:.2f} | {', '.join(f'{x[0]:.0f}' for x in r)} |")
        print()
    else:
        print(head)
        for c, r in results.items():
            print(f"{c:12s} {med[c][0]:8.0f} req/s  p99 {med[c][1]:6.2f} ms")
    for c in configs[1:]:
        loss = 1 - med[c][0] / med["plain"][0]
        p99 = med[c][1] / med["plain"][1] - 1
        print(f"{c}: throughput loss {loss * 100:.1f} % (budget 3 %), p99 increase {p99 * 100:.1f} % (budget 5 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
