"""Loop health end to end: real programs under the agent, the real CLI.

Each test runs a scenario with a known workload and compares ``loopscope
health`` (and ``ps``/``inspect``) with what the workload must produce.
"""

from __future__ import annotations

import threading

import pytest
from conftest import marker_line, scenario_path, uvloop_or_skip, wait_until, where


def _loop(report):
    (lp,) = report["loops"]
    return lp


def _health(ls, prog, *extra):
    return _loop(ls.ok("health", prog.pid, "--json", *extra).json())


def _first_user_frame(stack, script):
    frames = [f for f in stack if f["filename"] == str(script)]
    assert frames, f"no frame of {script} in {stack}"
    return frames[0]


# -- 1. a blocked loop, live and afterwards ------------------------------------------


def _blocked_report(ls, prog):
    lp = _health(ls, prog)
    return lp if lp["blocked"] else None


def _run_blocked_scenario(ls, kind):
    S = "health_block.py"
    go = ls.path("go")
    prog = ls.start(S, go, kind)
    prog.wait_line(lambda s: s.startswith("LOOP "))
    prog.wait_line("READY")
    prog.wait_agent()
    text_seen: dict[str, str] = {}

    def text_poll():
        # the plain-text report, taken while the loop is blocked
        def blocked_text():
            res = ls.ok("health", prog.pid)
            return res.out if "BLOCKED" in res.out else None

        try:
            text_seen["out"] = wait_until(blocked_text, timeout=1.4, interval=0.01, what="BLOCKED in plain-text health")
        except AssertionError as e:
            text_seen["error"] = str(e)

    open(go, "w").close()
    prog.wait_line("BLOCKING", timeout=5)
    th = threading.Thread(target=text_poll)
    th.start()
    # live, while time.sleep(1.5) is still running
    live = wait_until(lambda: _blocked_report(ls, prog), timeout=1.4, interval=0.01, what="health to report the loop blocked")
    th.join()
    assert not any(line == "UNBLOCKED" for line in prog.stdout.lines), "the report came after the block ended"
    return S, prog, live, text_seen


def _check_live(S, live, text_seen):
    b = live["blocked"]
    assert b["task"] is not None and b["task"]["name"] == "blocker", b
    assert b["task"]["coro"] == "blocker"
    assert 0.05 < b["duration"] < 1.5, b
    top = b["stack"][0]
    assert (top["function"], top["filename"], top["lineno"]) == ("blocker", str(scenario_path(S)), marker_line(S, "block")), b["stack"][:3]
    assert top["source"] == "time.sleep(1.5)  # LINE:block"

    assert "error" not in text_seen, text_seen.get("error")
    out = text_seen["out"]
    lines = out.splitlines()
    (banner,) = [i for i, line in enumerate(lines) if "!! BLOCKED for" in line]
    assert "task 'blocker'" in lines[banner], lines[banner]
    assert lines[banner + 1].split() == ["blocker", where(S, "block")], lines[banner + 1]
    assert lines[banner + 2].strip() == "time.sleep(1.5)  # LINE:block"


def _check_after(ls, S, prog, exact):
    prog.wait_line("UNBLOCKED", timeout=5)

    def recorded():
        lp = _health(ls, prog)
        return lp if lp["blocking"] and not lp["blocked"] else None

    lp = wait_until(recorded, timeout=5, what="the blocking step to be recorded")
    assert lp["exact"] is exact
    (entry,) = [e for e in lp["blocking"] if e["duration"] > 1.0]
    if exact:
        assert 1.5 <= entry["duration"] < 1.7, entry
    else:
        # no step hook: the episode is the late heartbeat (due at most one
        # heartbeat interval after the block began)
        assert 1.5 - 0.05 - 0.01 <= entry["duration"] < 1.7, entry
    assert entry["task"]["name"] == "blocker", entry
    top = _first_user_frame(entry["stack"], scenario_path(S))
    assert (top["function"], top["lineno"]) == ("blocker", marker_line(S, "block"))
    assert entry["stack"][0] == top, "the innermost frame is the blocking call"
    assert lp["lag"]["max"] >= 1.4, lp["lag"]
    return lp


def test_blocked_loop_live_and_recorded(ls):
    S, prog, live, text_seen = _run_blocked_scenario(ls, "asyncio")
    assert live["exact"] is True
    _check_live(S, live, text_seen)
    lp = _check_after(ls, S, prog, exact=True)
    assert lp["steps"]["max"] >= 1.5
    text = ls.ok("health", prog.pid).out
    assert "BLOCKED" not in text
    assert "blocking steps (>100.0ms), newest first:" in text
    assert f"blocker  {where(S, 'block')}" in text


@pytest.mark.uvloop
def test_uvloop_blocking_is_approximate_but_caught(ls):
    uvloop_or_skip()
    S, prog, live, text_seen = _run_blocked_scenario(ls, "uvloop")
    assert prog.stdout.lines[0] == "LOOP uvloop"
    assert live["exact"] is False
    assert live["kind"] == "uvloop"
    _check_live(S, live, text_seen)
    lp = _check_after(ls, S, prog, exact=False)
    # no step hook: no step statistics, no per-task busy time
    assert lp["steps"]["count"] is None and lp["steps"]["p99"] is None
    assert lp["busy"] is None and lp["top_busy"] == []
    assert lp["tasks"]["created"] == 2  # main and blocker


# -- 2. known workload -> counters ----------------------------------------------------


def test_task_counters_match_a_known_workload(ls):
    prog = ls.start_ready("health_counts.py")
    assert prog.stdout.lines[0] == "COUNTS 500 50 20"
    lp = _health(ls, prog)
    # 500 + 50 + 20 made by main, plus main itself (asyncio.run's task)
    assert lp["tasks"] == {
        "created": 571,
        "finished": 570,
        "done": 500,
        "failed": 50,
        "cancelled": 20,
        "destroyed_pending": 0,
        "live": 1,
    }
    st = lp["steps"]
    # every task ran at least one step; ok/fail ran two (before and after sleep(0))
    assert st["count"] >= 500 * 2 + 50 * 2 + 20 + 1
    assert st["min"] <= st["p50"] <= st["p95"] <= st["p99"] <= st["max"], st
    assert 0 < st["avg"] <= st["max"]
    assert st["slow_threshold"] == 0.1
    assert lp["busy"] > 0 and lp["exact"] is True
    text = ls.ok("health", prog.pid).out
    assert "tasks     live 1  created 571  finished 570 (done 500, failed 50, cancelled 20, destroyed pending 0)" in text


# -- 7. executors ---------------------------------------------------------------------


def test_executor_saturation(ls):
    release = ls.path("release")
    prog = ls.start_ready("executors.py", release)
    try:

        def saturated():
            lp = _health(ls, prog)
            ex = {e["name"]: e for e in lp["executors"]}
            d, p = ex.get("default"), ex.get("pool-a")
            if d and p and d["active"] == 2 and d["queued"] == 1 and p["active"] == 1:
                return ex
            return None

        ex = wait_until(saturated, timeout=5, what="executors to report 2 active + 1 queued")
        assert ex["default"] == {"name": "default", "max_workers": 2, "threads": 2, "active": 2, "queued": 1}
        assert ex["pool-a"] == {"name": "pool-a", "max_workers": 3, "threads": 1, "active": 1, "queued": 0}
        text = ls.ok("health", prog.pid).out
        assert "executor  default: 2/2 busy, 2 threads, 1 queued" in text
        assert "executor  pool-a: 1/3 busy, 1 threads, 0 queued" in text
    finally:
        open(release, "w").close()
    prog.wait_line("DONE [0, 1, 2, 3]")

    def drained():
        ex = {e["name"]: e for e in _health(ls, prog)["executors"]}
        return ex if ex["default"]["active"] == 0 and ex["pool-a"]["active"] == 0 else None

    ex = wait_until(drained, timeout=5, what="executors to go idle")
    assert ex["default"]["queued"] == 0


# -- 9. per-task step fields ----------------------------------------------------------


SORT_BUSY = "busy"  # numeric keys sort largest first (query.py)


def test_ps_sort_busy_puts_the_busiest_first(ls):
    prog = ls.start_ready("cpu_steps.py")
    page = ls.ok("ps", prog.pid, "--sort", SORT_BUSY, "--json").json()
    tasks = page["tasks"]
    first = tasks[0]
    assert first["name"] == "burner", [(t["name"], t.get("busy")) for t in tasks]
    assert first["steps"] >= 101, first
    assert first["busy"] >= 100 * 0.002, first
    assert 0.002 <= first["longest"] < 0.1, first
    assert first["first_step"] is not None and first["first_step"] >= 0
    assert first["idle"] is not None and first["idle"] >= 0
    for t in tasks[1:]:
        assert t["busy"] < first["busy"]
    idlers = {t["name"]: t for t in tasks if t["name"].startswith("idle-")}
    assert sorted(idlers) == ["idle-0", "idle-1", "idle-2"]
    assert all(t["steps"] == 1 for t in idlers.values()), idlers
    # sorted by switches: the burner first too
    assert ls.ok("ps", prog.pid, "--sort", "steps", "--json").json()["tasks"][0]["name"] == "burner"


def test_inspect_shows_per_task_steps(ls):
    prog = ls.start_ready("cpu_steps.py")
    info = ls.ok("inspect", prog.pid, "burner", "--json").json()
    assert info["steps"] >= 101 and info["busy"] >= 0.2
    text = ls.ok("inspect", prog.pid, "burner").out
    assert "steps" in text and "busy" in text, f"inspect does not show the task's steps / busy time:\n{text}"
