"""`loopscope run` options reach the agent: history size, the cancel permission."""

from __future__ import annotations

from conftest import parse_table, wait_until


def test_history_size_bounds_each_outcome(ls):
    prog = ls.start_ready("mixed.py", run_opts=("--history-size", "1"))
    rows = parse_table(ls.ok("history", prog.pid).out)
    # one per outcome: the latest done (quick-1), the failure and the cancellation
    assert sorted((r["name"], r["state"]) for r in rows) == [("broken", "failed"), ("doomed", "cancelled"), ("quick-1", "done")]


def test_cancel_needs_permission(ls):
    prog = ls.start_ready("mixed.py")
    assert prog.call("hello")["permissions"] == ["read"]
    from loopscope.client.connection import RemoteError

    with prog.connect() as conn:
        try:
            conn.call("tasks.cancel", {"task": "worker-0"})
        except RemoteError as e:
            assert e.code == -32002 and "allow_cancel" in str(e)
        else:
            raise AssertionError("cancel was allowed without the permission")
    assert "worker-0" in {t["name"] for t in prog.call("tasks.list", {})["tasks"]}


def test_allow_cancel(ls):
    prog = ls.start_ready("nested.py", run_opts=("--allow-cancel",))
    assert prog.call("hello")["permissions"] == ["read", "cancel"]
    page = prog.call("tasks.graph", {"filter": {"name": "foo2"}})
    (target,) = [t for t in page["tasks"] if t["awaiters"][0]["task_name"] == "foo1.0"][:1]
    res = prog.call("tasks.cancel", {"task": target["id"], "message": "from the test"})
    assert res == {"task": target["id"], "scheduled": True}

    def in_history():
        return [t for t in prog.call("history.list", {"kind": "cancelled"})["tasks"] if t["id"] == target["id"]]

    (entry,) = wait_until(in_history, timeout=10, what="the cancelled task in the history")
    c = entry["cancel"]
    assert c["message"] == "from the test"
    assert c["by_task_id"] is None  # the loop ran it, from the agent's request
    assert [f["function"] for f in c["victim_stack"]] == ["sleep", "foo2"]
    # gather(return_exceptions=True) absorbs it: the program goes on
    assert prog.alive()
    live = {t["id"] for t in prog.call("tasks.list", {})["tasks"]}
    assert target["id"] not in live and len(live) == 10
    text = ls.ok("inspect", prog.pid, target["id"]).out
    assert "Cancelled at " in text and "by code outside any task, message 'from the test'" in text
