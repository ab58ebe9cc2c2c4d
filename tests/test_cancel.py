"""Cancellation: who cancelled a task, from where, with what message, and
where the victim was suspended; wait_for timeouts too."""

from __future__ import annotations

import sys

import pytest
from conftest import marker_line, parse_table, scenario_path, where

S = "cancel.py"


@pytest.fixture
def cancel_prog(ls):
    return ls.start_ready(S)


def test_history_cancelled_lists_victim_by_killer(ls, cancel_prog):
    res = ls.ok("history", cancel_prog.pid, "--cancelled")
    rows = {r["name"]: r for r in parse_table(res.out)}
    assert set(rows) == {"victim", "slow-inner"}, res.out
    v = rows["victim"]
    assert v["state"] == "cancelled"
    assert v["coroutine"] == "victim"
    assert v["details"] == f"by killer at {where(S, 'cancel-call')} msg='stop now'"
    assert rows["slow-inner"]["state"] == "cancelled"
    # history (all) has the finished non-cancelled tasks too, cancelled ones among them
    all_rows = parse_table(ls.ok("history", cancel_prog.pid).out)
    states = {r["name"]: r["state"] for r in all_rows}
    assert states["victim"] == "cancelled" and states["killer"] == "done"
    done = {r["name"] for r in parse_table(ls.ok("history", cancel_prog.pid, "--done").out)}
    assert "killer" in done and "victim" not in done


def test_inspect_cancelled_task_from_history(ls, cancel_prog):
    res = ls.ok("inspect", cancel_prog.pid, "victim")
    out = res.out
    assert "  state      cancelled" in out
    (line,) = [line for line in out.splitlines() if line.startswith("Cancelled at ")]
    assert " by task killer (0x" in line and line.endswith("message 'stop now'")
    by = out.split("  cancel() called from:\n", 1)[1].split("  the task was suspended at:\n")
    cancel_site, suspended = by[0].splitlines(), by[1].splitlines()
    assert cancel_site[0] == f"      killer {where(S, 'cancel-call')}"
    assert cancel_site[1].strip() == 'target.cancel("stop now")  # LINE:cancel-call'
    frames = [line.strip() for line in suspended if line.startswith("      ") and not line.startswith("          ")]
    assert frames[0].startswith("sleep ") and "asyncio" in frames[0]
    assert frames[1] == f"victim {where(S, 'victim-sleep')}"
    assert "Outcome: cancelled" in out


def test_inspect_cancelled_json(ls, cancel_prog):
    info = ls.ok("inspect", cancel_prog.pid, "victim", "--json").json()
    c = info["cancel"]
    assert c["message"] == "stop now"
    assert c["by_task_name"] == "killer"
    assert c["count"] == 1
    assert (c["by_stack"][0]["function"], c["by_stack"][0]["lineno"]) == ("killer", marker_line(S, "cancel-call"))
    assert c["by_stack"][0]["filename"] == str(scenario_path(S))
    assert [(f["function"], f["lineno"]) for f in c["victim_stack"]][1] == ("victim", marker_line(S, "victim-sleep"))
    assert info["outcome"]["state"] == "cancelled"


def test_wait_for_timeout_cancellation(ls, cancel_prog):
    page = cancel_prog.call("history.list", {"kind": "cancelled", "detail": True})
    (inner,) = [t for t in page["tasks"] if t["name"] == "slow-inner"]
    assert inner["state"] == "cancelled"
    assert inner["parent_name"] == "waiter"
    c = inner["cancel"]
    victim = [(f["function"], f["lineno"]) for f in c["victim_stack"]]
    assert ("slow", marker_line(S, "slow-sleep")) in victim
    # the cancel came from wait_for's machinery, never from the user's code
    assert not any(f["function"] in ("killer", "victim") for f in c["by_stack"])
    info = ls.ok("inspect", cancel_prog.pid, "slow-inner").out
    assert f"slow {where(S, 'slow-sleep')}" in info


def test_wait_for_cancel_stack_has_no_loopscope_frames(ls, cancel_prog):
    page = cancel_prog.call("history.list", {"kind": "cancelled", "detail": True})
    (inner,) = [t for t in page["tasks"] if t["name"] == "slow-inner"]
    files = [f["filename"] for f in inner["cancel"]["by_stack"]]
    assert files, inner
    assert not [f for f in files if "/loopscope/" in f], files
    rows = {r["name"]: r for r in parse_table(ls.ok("history", cancel_prog.pid, "--cancelled").out)}
    # (not a bare "loopscope": an interpreter may live under a path like
    # ~/.cache/loopscope-ci/, as in CI)
    assert "loopscope/agent/" not in rows["slow-inner"]["details"]
    assert "tracker.py" not in rows["slow-inner"]["details"]
    if sys.version_info < (3, 12):
        # 3.11: wait_for cancels the inner task from inside the waiter task
        assert rows["slow-inner"]["details"] == f"by waiter at {where(S, 'wait-for')}"


def test_history_filter_and_limit(ls, cancel_prog):
    res = ls.ok("history", cancel_prog.pid, "--filter", "name=slow*")
    assert [r["name"] for r in parse_table(res.out)] == ["slow-inner"]
    res = ls.ok("history", cancel_prog.pid, "--limit", "1")
    assert len(parse_table(res.out)) == 1
    assert res.err.strip().startswith("(1 shown of ")
    page = ls.ok("history", cancel_prog.pid, "--cancelled", "--json").json()
    assert page["schema"] == 1 and page["matched"] == 2
    # most recently ended first
    ended = [t["outcome"]["ended"] for t in page["tasks"]]
    assert ended == sorted(ended, reverse=True)
