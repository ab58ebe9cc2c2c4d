"""A real server's instructions and simulated cache misses per request, under wrk.

Usage::

    python benchmarks/server_cache.py [--app aiohttp|uvicorn] [--configs plain,loopscope] [--cache-sim] [--functions N]

``instructions.py`` counts an in-process workload (clients and server in one
loop); this counts the server ``http_wrk.py`` measures by the clock, in its
own process under ``valgrind --tool=cachegrind`` (pinned to CPU 0), loaded
by ``wrk -c8`` on CPU 1.  Each configuration runs twice, for two durations;
the difference of the two counts divided by the difference of the requests
served is the cost of one request, start-up and warm-up cancelled out.

Why both: on aiohttp 3.14 with everything on, the in-process workload counts
+70 instruction-cache misses per request over plain, this one about +390
(thirteenth and fourteenth sessions, BENCHMARKS.md): the real server's
per-request code is larger and evicts more of ours between steps, which is
what the clock pays for.

``--cache-sim`` simulates this machine's caches (32 KB 8-way L1 instruction
and data caches, and a 1 MB L2 as cachegrind's last level: the level a line
evicted from L1 is fetched from).  ``--functions N`` prints the N functions
whose counts grew most per request and the N that shrank most (needs
``cg_annotate``; names need an interpreter with symbols, e.g. a pyenv build:
Debian's is stripped, and its interpreter shows as ``???``).

How far to trust a difference: the counts of loopscope's own functions
repeat from run to run, but the total moves by about +-40 instruction-cache
misses and +-1,500 instructions per request between two runs of one tree
(how many requests each loop iteration serves varies), so compare trees by
their functions, or over several runs.

Under valgrind the server runs ~50x slower, so work done per second (the
agent's health sample, its watchdog) weighs ~50x more per request than on a
real server; the agent's timers are set to 5 s here to keep that small.  The
same holds for the ring of finished tasks, which keeps 100 clean ends a
second in full: a third of the requests of a server slowed by valgrind, a
fraction of a percent of a real one's; it is emptied here
(``http_wrk.NO_DONE_RING``).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_wrk import APPS, SRC, SWITCHES, VARIANTS, free_port, pin  # noqa: E402

EVENTS = ("Ir", "I1mr", "D1mr", "DLmr")
#: The runs' cachegrind outputs and socket directories, removed at the end.
TEMP_DIRS: list[str] = []
SIM = ["--cache-sim=yes", "--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,16,64"]


def run_once(config: str, app: str, seconds: int, cache_sim: bool) -> tuple[int, str]:
    """One server under cachegrind for ``seconds`` of wrk: (requests, its cachegrind file)."""
    name, _, src = config.partition("@")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSCOPE_")}
    env["PYTHONPATH"] = src or str(SRC)
    port = free_port()
    cmd = [sys.executable, app, str(port)]
    env.update(SWITCHES.get(name, {}))  # http_wrk.py's controls
    if name in VARIANTS:
        sockdir = tempfile.mkdtemp(prefix="ls-cg-")
        TEMP_DIRS.append(sockdir)
        os.chmod(sockdir, 0o700)
        env["LOOPSCOPE_SOCKET_DIR"] = sockdir
        env.update({"LOOPSCOPE_" + k: v for k, v in VARIANTS[name].items()})
        env.update({"LOOPSCOPE_WATCHDOG": "5", "LOOPSCOPE_HEARTBEAT": "5"})
        env["WRK_NO_DONE_RING"] = "1"  # see http_wrk.NO_DONE_RING
        cmd = [sys.executable, "-m", "loopscope", "run", "--", *cmd]
    out = tempfile.mkdtemp(prefix="server-cache-")
    TEMP_DIRS.append(out)
    vg = ["valgrind", "--tool=cachegrind", *(SIM if cache_sim else ["--cache-sim=no"]), "--trace-children=yes", f"--cachegrind-out-file={out}/cg.%p"]
    proc = subprocess.Popen(pin(0) + vg + cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "READY" not in line:
            raise RuntimeError(f"{config}: the server did not start under valgrind")
        res = subprocess.run(pin(1) + ["wrk", "-t1", "-c8", f"-d{seconds}s", f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
        m = re.search(r"(\d+) requests in", res.stdout)
        if m is None:
            raise RuntimeError(f"no request count in wrk's output:\n{res.stdout}{res.stderr}")
    finally:
        proc.terminate()
        proc.communicate()
    # the launcher (loopscope run, the ld.so wrapper) execs: the file with
    # the most instructions is the server's
    best = max(glob.glob(f"{out}/cg.*"), key=lambda f: totals(f)["Ir"])
    return int(m.group(1)), best


def totals(path: str) -> dict[str, int]:
    text = Path(path).read_text()
    names = re.search(r"^events: (.*)$", text, re.M).group(1).split()  # type: ignore[union-attr]
    values = re.search(r"^summary: (.*)$", text, re.M).group(1).split()  # type: ignore[union-attr]
    return dict(zip(names, map(int, values)))


def functions(path: str, events: list[str]) -> dict[str, list[int]]:
    """Per-function counts from cg_annotate (file:function -> counts)."""
    out = subprocess.run(["cg_annotate", f"--show={','.join(events)}", "--threshold=0", "--auto=no", path], capture_output=True, text=True).stdout
    acc: dict[str, list[int]] = collections.defaultdict(lambda: [0] * len(events))
    for line in out.splitlines():
        toks = re.sub(r"\(\s*[\d.]+%\)", "", line).split()
        vals, name = toks[: len(events)], " ".join(toks[len(events) :])
        if len(vals) < len(events) or not all(re.fullmatch(r"[\d,]+|\.", v) for v in vals) or ":" not in name or "PROGRAM TOTALS" in name:
            continue
        acc[name] = [a + (0 if v == "." else int(v.replace(",", ""))) for a, v in zip(acc[name], vals)]
    return acc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", choices=sorted(APPS), default="aiohttp")
    ap.add_argument("--configs", default="plain,loopscope", help=f"comma-separated, the first is the baseline: plain, task-subclass, task-del (aiohttp), {', '.join(VARIANTS)} (CONFIG@SRC for another tree)")
    ap.add_argument("--seconds", default="6,18", help="the two durations of wrk, in seconds")
    ap.add_argument("--cache-sim", action="store_true", help="simulate this machine's L1 caches and its L2 as the last level")
    ap.add_argument("--functions", type=int, default=0, metavar="N", help="the N functions whose counts grew most per request, and the N that shrank most")
    args = ap.parse_args()
    for tool in ("valgrind", "wrk") + (("cg_annotate",) if args.functions else ()):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian: apt-get install {'valgrind' if tool == 'cg_annotate' else tool})", file=sys.stderr)
            return 2
    configs = args.configs.split(",")
    unknown = [c for c in configs if c.partition("@")[0] not in ("plain", "task-subclass", "task-del", *VARIANTS)]
    if unknown:
        print(f"--configs: unknown {', '.join(unknown)}", file=sys.stderr)
        return 2
    short, long_ = (int(x) for x in args.seconds.split(","))
    events = list(EVENTS if args.cache_sim else EVENTS[:1])
    with tempfile.NamedTemporaryFile("w", suffix="_app.py", delete=False) as f:
        f.write(APPS[args.app])
        app = f.name
    per_request: dict[str, dict[str, float]] = {}
    per_function: dict[str, dict[str, list[float]]] = {}
    try:
        for config in configs:
            (r1, f1), (r2, f2) = run_once(config, app, short, args.cache_sim), run_once(config, app, long_, args.cache_sim)
            if r2 <= r1:
                raise RuntimeError(f"{config}: the longer run served no more requests ({r1}, {r2})")
            t1, t2 = totals(f1), totals(f2)
            per_request[config] = {e: (t2[e] - t1[e]) / (r2 - r1) for e in events}
            print(f"{config}: {r1} and {r2} requests; per request " + ", ".join(f"{e} {v:,.0f}" for e, v in per_request[config].items()), file=sys.stderr)
            if args.functions:
                a, b = functions(f1, events), functions(f2, events)
                per_function[config] = {k: [(y - x) / (r2 - r1) for x, y in zip(a.get(k, [0] * len(events)), b.get(k, [0] * len(events)))] for k in set(a) | set(b)}
    finally:
        os.unlink(app)
        for d in TEMP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
    base = configs[0]
    print(f"Python {sys.version.split()[0]}, {args.app}, per request against {base}:")
    for config in configs[1:]:
        print(f"  {config}: " + ", ".join(f"{e} {per_request[config][e] - per_request[base][e]:+,.0f} ({per_request[config][e] / per_request[base][e] - 1:+.1%})" for e in events))
        if args.functions:
            zero = [0.0] * len(events)
            rows = sorted(((k, [y - x for x, y in zip(per_function[base].get(k, zero), v)]) for k, v in per_function[config].items()), key=lambda r: -r[1][min(1, len(events) - 1)])
            print("    " + "  ".join(f"{e:>8s}" for e in events) + "  function")
            for k, d in rows[: args.functions] + [("...", [0.0] * len(events))] + rows[-args.functions :]:
                print("    " + "  ".join(f"{x:+8.1f}" for x in d) + f"  {k[-90:]}" if k != "..." else "    ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
