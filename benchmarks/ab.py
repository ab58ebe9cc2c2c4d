"""Before and after: the same workload on two loopscope trees, interleaved.

Usage::

    git worktree add /tmp/before HEAD~1          # the tree to compare with
    (cd /tmp/before && python setup.py build_ext --inplace)   # its compiled parts
    python benchmarks/ab.py --before /tmp/before --workload eager \\
        --configs tracking,loopscope --rounds 9 [--clock cpu]

Each round runs ``run.py --child WORKLOAD CONFIG`` (this tree's run.py, so
both trees run the very same workload) once per configuration and tree, in
fresh processes, the tree chosen by ``PYTHONPATH``; ``plain`` runs once per
round, as the baseline both are divided by.  The machines are noisy: the
rounds interleave so that a slow minute hits both trees alike, and medians
are compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
AFTER = HERE.parent


def child(tree: Path, workload: str, config: str, clock: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSCOPE_")}
    env["PYTHONPATH"] = str(tree / "src")
    cmd = [sys.executable, str(HERE / "run.py"), "--clock", clock, "--child", workload, config]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    last = (out.stdout.split() or ["?"])[-1]
    try:
        return float(last)
    except ValueError:
        raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={tree / 'src'}) gave {out.stdout!r}\n{out.stderr[-2000:]}") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the other tree (its src/ is imported)")
    ap.add_argument("--workload", default="spawn", help="a workload of run.py: spawn, pingpong, eager")
    ap.add_argument("--configs", default="tracking,loopscope", help="run.py configurations, comma-separated (plain is added)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    args = ap.parse_args()
    if not (args.before / "src" / "loopscope").is_dir():
        ap.error(f"{args.before} is not a loopscope tree (no src/loopscope)")
    configs = [c for c in args.configs.split(",") if c and c != "plain"]
    trees = {"before": args.before.resolve(), "after": AFTER}
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        times.setdefault(("plain", "-"), []).append(child(AFTER, args.workload, "plain", args.clock))
        for c in configs:
            for name, tree in trees.items():
                times.setdefault((c, name), []).append(child(tree, args.workload, c, args.clock))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    base = statistics.median(times[("plain", "-")])
    print(f"{args.workload}, {args.clock} clock, {args.rounds} interleaved rounds, medians; ratio to plain {base:.4f} s")
    for c in configs:
        before, after = (statistics.median(times[(c, n)]) for n in trees)
        print(f"{c:12s} before {before:.4f} s ({before / base:.3f}x)   after {after:.4f} s ({after / base:.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
