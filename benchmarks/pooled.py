"""The rounds of several ``http_wrk.py`` runs pooled: paired medians with their 95 % intervals.

Usage::

    python benchmarks/http_wrk.py --interleave ... 2> run1.txt
    python benchmarks/http_wrk.py --interleave ... 2> run2.txt
    python benchmarks/pooled.py run1.txt run2.txt [--baseline plain]

Why: one run's interval counts the noise between its rounds only; a drift
of the machine over that run's minutes falls on all of its rounds alike and
can move the whole run (on this machine two runs of the same trees, one
after the other, gave paired losses of -1.4 % and +2.0 %).  Rounds pooled
from runs at different times sample several drifts, so their interval is the
honest one for a claim about the budget.  Each file is what ``http_wrk.py``
prints on stderr, one ``run i/N: <config> <req/s> req/s p99 <ms> ms <us>
us/req, ...`` line per round; every other line is ignored.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_wrk import paired_report  # noqa: E402

ROUND = re.compile(r"(\S+) (\d+(?:\.\d+)?) req/s p99 ([\d.]+) ms ([\d.]+) us/req")


def rounds(path: str) -> list[dict[str, tuple[float, float, float]]]:
    """Each round of one file: config -> (req/s, p99 ms, CPU us per request)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("run "):
            found = ROUND.findall(line)
            if found:
                out.append({c: (float(r), float(p), float(u)) for c, r, p, u in found})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="http_wrk.py's stderr, one file per run")
    ap.add_argument("--baseline", default="plain")
    args = ap.parse_args()
    pooled: list[dict[str, tuple[float, float, float]]] = []
    for f in args.files:
        try:
            got = rounds(f)
        except OSError as e:
            print(f"{f}: {e.strerror}", file=sys.stderr)
            return 2
        if not got:
            print(f"{f}: no rounds of http_wrk.py in it", file=sys.stderr)
            return 2
        pooled += got
    configs = sorted({c for r in pooled for c in r} - {args.baseline})
    print(f"{len(pooled)} rounds from {len(args.files)} runs, against {args.baseline}")
    for c in configs:
        pairs = [(r[c], r[args.baseline]) for r in pooled if c in r and args.baseline in r]
        if not pairs:
            continue
        for line in paired_report(f"{c} ({len(pairs)} rounds)", pairs):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
