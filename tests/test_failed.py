"""Failed tasks: recorded in the history, and asyncio's own "never retrieved"
log still reaches the program's stderr (the agent must not swallow it)."""

from __future__ import annotations

import pytest
from conftest import marker_line, parse_table, where

S = "failed.py"


@pytest.fixture
def failed_prog(ls):
    return ls.start_ready(S)


def test_history_failed(ls, failed_prog):
    rows = {r["name"]: r for r in parse_table(ls.ok("history", failed_prog.pid, "--failed").out)}
    assert set(rows) == {"boom", "handled"}
    assert rows["boom"]["state"] == "failed"
    assert rows["boom"]["details"] == "ValueError: boom"
    assert rows["boom"]["coroutine"] == "explode"
    assert rows["handled"]["details"] == "KeyError: 'missing'"
    assert rows["boom"]["creation site"].startswith("main ")


def test_inspect_failed_traceback(ls, failed_prog):
    info = ls.ok("inspect", failed_prog.pid, "boom", "--json").json()
    o = info["outcome"]
    assert (o["state"], o["exc_type"], o["exc_message"]) == ("failed", "ValueError", "boom")
    assert (o["traceback"][0]["function"], o["traceback"][0]["lineno"]) == ("explode", marker_line(S, "raise"))
    text = ls.ok("inspect", failed_prog.pid, "boom").out
    assert "Outcome: failed" in text and text.count("ValueError: boom") == 1
    assert f"      explode {where(S, 'raise')}" in text


def test_never_retrieved_is_still_logged(failed_prog):
    """The agent reads the exception without marking it retrieved."""
    err = failed_prog.stderr
    err.wait_line(lambda s: s.endswith("exception was never retrieved"), timeout=10)
    err.wait_line("ValueError: boom", timeout=10)
    text = err.text
    assert "name='boom'" in text
    assert "handled" not in text  # its exception was retrieved by its awaiter
    assert "loopscope:" not in text  # and the agent said nothing


def test_never_retrieved_log_line_is_unchanged(failed_prog):
    err = failed_prog.stderr
    err.wait_line("ValueError: boom", timeout=10)
    assert "Task exception was never retrieved" in err.lines
    assert any(line.startswith("future: <Task finished name='boom'") for line in err.lines)


def test_failed_history_json_and_stats_by_state(ls, failed_prog):
    page = ls.ok("history", failed_prog.pid, "--failed", "--json").json()
    assert {t["name"]: t["outcome"]["exc_type"] for t in page["tasks"]} == {"boom": "ValueError", "handled": "KeyError"}
    stats = ls.ok("stats", failed_prog.pid, "--by", "state", "--json").json()
    assert stats["by"] == "state"
    assert {g["key"]: g["count"] for g in stats["groups"]} == {"pending": 1}  # only main is alive


def test_heavy_churn_samples_clean_completions_but_keeps_every_failure(ls):
    """10,000 clean completions in a burst: the done ring is offered 1,000
    at once and then a tenth of that a second, the counts stay exact, every
    failure is in the failed ring, and a completion after the burst is kept."""
    prog = ls.start_ready("churn.py", env={"LOOPSCOPE_HISTORY_SIZE": "100"})
    page = ls.ok("history", prog.pid, "--json").json()
    health = ls.ok("health", prog.pid, "--json").json()
    done = health["loops"][0]["tasks"]["done"]
    assert done >= 10_000
    kept = sum(1 for t in page["tasks"] if t["state"] == "done")
    assert kept <= 100
    assert page["done_not_kept"] >= done - 1000 - 200  # at most 2 s of refills (100 a second) while it ran
    assert "after-the-burst" in {t["name"] for t in page["tasks"]}
    failed = {r["name"] for r in parse_table(ls.ok("history", prog.pid, "--failed").out)}
    assert failed == {f"bad-{i}" for i in range(20)}
    text = ls.ok("history", prog.pid).out
    assert f"({page['done_not_kept']} clean completions counted but not kept" in text
