"""A blocked loop: the agent answers from its own thread and says what blocks it."""

from __future__ import annotations

import os
import time

from conftest import marker_line, scenario_path, wait_until, where

S = "blocked.py"


def _blocked_hello(prog):
    h = prog.call("hello")
    return h if h["loops"] and h["loops"][0]["blocked"] else None


def test_blocked_loop_is_reported(ls):
    release = ls.path("release")
    prog = ls.start_ready(S, release)
    try:
        hello = wait_until(lambda: _blocked_hello(prog), timeout=5, what="the loop to be reported blocked")
        (loop,) = hello["loops"]
        assert loop["running"] is True
        assert loop["blocked_for"] > 0.25
        funcs = [f["function"] for f in loop["blocked_stack"]]
        assert funcs[:2] == ["block_the_loop", "blocker"], funcs
        top = loop["blocked_stack"][0]
        assert (top["filename"], top["lineno"]) == (str(scenario_path(S)), marker_line(S, "block"))
        assert top["source"] == "time.sleep(0.05)  # LINE:block"

        # a direct query answers fast although the loop runs nothing
        with prog.connect() as conn:
            t0 = time.perf_counter()
            page = conn.call("tasks.graph", {})
            took = time.perf_counter() - t0
        print(f"\n[blocked] tasks.graph on a blocked loop answered in {took * 1000:.1f} ms")
        assert took < 0.5, took
        states = {t["name"]: t["state"] for t in page["tasks"]}
        assert states["blocker"] == "running"
        assert states["sleeper-0"] == "pending"

        res = ls.ok("ps", prog.pid)
        print(f"[blocked] loopscope ps (incl. interpreter start) took {res.seconds * 1000:.0f} ms")
        banner = res.err.splitlines()
        assert "is BLOCKED for" in banner[0] and f"(thread {prog.pid})" in banner[0]
        assert banner[1].strip() == f"block_the_loop {where(S, 'block')}    time.sleep(0.05)  # LINE:block"
        assert f"blocker {where(S, 'call-block')}" in banner[2]
        assert "blocker" in res.out and "sleeper-2" in res.out
        assert prog.alive()
        # `list` shows it blocked too
        rows = ls.ok("list", "--json").json()["agents"]
        assert [(r["pid"], r["blocked"]) for r in rows] == [(prog.pid, "YES")]
    finally:
        with open(release, "w"):
            pass
    prog.wait_line("UNBLOCKED", timeout=10)
    wait_until(lambda: not prog.call("hello")["loops"][0]["blocked"], timeout=5, what="the loop to recover")
    res = ls.ok("ps", prog.pid)
    assert "BLOCKED" not in res.err


def test_not_blocked_when_idle(ls):
    prog = ls.start_ready("chain.py")
    # sampled over many heartbeats (and past blocked_after): never reported blocked
    samples = 0
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        loop = prog.call("hello")["loops"][0]
        assert loop["blocked"] is False and loop["blocked_stack"] is None
        samples += 1
        time.sleep(0.02)  # a sampling interval, not a synchronisation
    assert samples >= 5
    assert os.path.exists(prog.socket)
