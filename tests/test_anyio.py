"""anyio on its asyncio backend (and on uvloop through anyio): task groups
and primitives, from a real anyio program under the agent, read through
the real CLI (live and from a dump)."""

from __future__ import annotations

import pytest
from conftest import parse_table, uvloop_or_skip, where

S = "anyio_app.py"

BACKENDS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.uvloop)]


def _start(ls, backend):
    pytest.importorskip("anyio", reason="anyio is in the test extras; this interpreter's environment lacks it")
    if backend == "uvloop":
        uvloop_or_skip()
    prog = ls.start_ready(S, *([backend] if backend == "uvloop" else []))
    loops = ls.ok("ps", prog.pid, "--json").json()["loops"]
    assert [lp["kind"] for lp in loops] == (["uvloop.Loop"] if backend == "uvloop" else ["asyncio.unix_events._UnixSelectorEventLoop"]), loops
    return prog


def _by_site(items, tag):
    (hit,) = [i for i in items if (i.get("site") or "").endswith(where(S, tag))]
    return hit


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyio_task_groups(ls, backend):
    prog = _start(ls, backend)
    groups = ls.ok("groups", prog.pid, "--json").json()["groups"]
    assert {g["kind"] for g in groups} == {"anyio.TaskGroup"} and len(groups) == 4, groups
    # created at the user's line, not in anyio; parent task; state
    outer = _by_site(groups, "outer-group")
    assert outer["site"] == f"main {where(S, 'outer-group')}"
    assert outer["parent_name"] == "__main__.main" and outer["state"] == "open"
    kids = {c["task_name"]: c["state"] for c in outer["children"]}
    waiters = {f"{p}-{r}" for p in ("lock", "adapter", "sem", "limiter") for r in ("holder", "waiter")}
    assert kids == {"quick": "done", "nester": "pending", "canceller": "pending", "event-waiter": "pending", "cond-waiter": "pending",
                    "receiver": "pending", "sender": "pending", "anyio-left": "pending", "anyio-right": "pending"} | dict.fromkeys(waiters, "pending"), kids
    inner = _by_site(groups, "inner-group")
    assert inner["parent_name"] == "nester" and inner["state"] == "closing (waiting for children)"
    assert {c["task_name"]: c["state"] for c in inner["children"]} == {"leaf-1": "pending", "leaf-2": "pending"}
    cancelled = _by_site(groups, "cancelled-group")
    assert cancelled["parent_name"] == "canceller" and cancelled["state"] == "shutting down (cancelled)"
    assert [c["task_name"] for c in cancelled["children"]] == ["shielded"]
    finished = _by_site(groups, "finished-group")
    assert finished["state"] == "closed" and finished["parent_name"] == "__main__.main"
    assert [(c["task_name"], c["state"]) for c in finished["children"]] == [("finished-child", "done")]

    tree = ls.ok("groups", prog.pid).out.splitlines()
    (i_nester,) = [i for i, ln in enumerate(tree) if "(T) nester " in ln]
    (i_inner,) = [i for i, ln in enumerate(tree) if "[anyio.TaskGroup]" in ln and "parent task 'nester'" in ln]
    assert i_inner == i_nester + 1 and tree[i_inner].index("└── ") > tree[i_nester].index("── ")
    assert f"created at nester {where(S, 'inner-group')}" in tree[i_inner]

    dump = ls.path("anyio.json")
    ls.ok("dump", prog.pid, "-o", dump)
    offline = ls.ok("groups", dump, "--json").json()["groups"]
    assert sorted((g["id"], g["state"], g["site"]) for g in offline) == sorted((g["id"], g["state"], g["site"]) for g in groups)


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyio_primitives_holders_and_waiters(ls, backend):
    prog = _start(ls, backend)
    prims = ls.ok("primitives", prog.pid, "--json").json()["primitives"]
    # anyio's own objects (a Condition's Lock, each task handle's Event, the
    # asyncio.Event inside every anyio Event) are not listed on their own
    assert all(p["kind"].startswith("anyio.") and p["tracked"] for p in prims), prims

    def one(tag):
        p = _by_site(prims, tag)
        return p, [h["task_name"] for h in p["holders"]], [(w["task_name"], w["role"]) for w in p["waiters"]]

    lock, holders, waiters = one("lock")
    assert lock["kind"] == "anyio.Lock" and lock["state"] == "locked"
    assert holders == ["lock-holder"] and waiters == [("lock-waiter", "acquire")]
    adapted, holders, waiters = one("adapter-lock")  # made at import, outside the loop
    assert adapted["kind"] == "anyio.Lock" and adapted["site"] == f"<module> {where(S, 'adapter-lock')}"
    assert holders == ["adapter-holder"] and waiters == [("adapter-waiter", "acquire")]
    sem, holders, waiters = one("sem")
    assert sem["kind"] == "anyio.Semaphore" and sem["value"] == 0 and sem["holders_known"] is False
    assert waiters == [("sem-waiter", "acquire")]
    limiter, holders, waiters = one("limiter")
    assert limiter["kind"] == "anyio.CapacityLimiter" and limiter["state"] == "1/1 tokens borrowed"
    assert holders == ["limiter-holder"] and waiters == [("limiter-waiter", "acquire")]
    event, _, waiters = one("event")
    assert event["kind"] == "anyio.Event" and event["is_set"] is False and waiters == [("event-waiter", "wait")]
    cond, _, waiters = one("cond")
    assert cond["kind"] == "anyio.Condition" and waiters == [("cond-waiter", "wait")]
    full, _, waiters = one("full-stream")
    assert full["kind"] == "anyio.MemoryObjectStream" and (full["size"], full["maxsize"]) == (1, 1) and waiters == [("sender", "send")]
    empty, _, waiters = one("empty-stream")  # create_memory_object_stream[str](1): through typing's __call__
    assert (empty["size"], empty["maxsize"]) == (0, 1) and waiters == [("receiver", "receive")]
    for tag in ("lock", "sem", "limiter", "event", "cond", "full-stream", "empty-stream"):
        assert _by_site(prims, tag)["site"] == f"main {where(S, tag)}"
    w = event["waiters"][0]["where"]
    assert f"{w['filename']}:{w['lineno']}" == where(S, "event-waits")

    text = parse_table(ls.ok("primitives", prog.pid, "--kind", "Semaphore", "-l").out)
    assert [(r["kind"], r["holders"], r["created at"]) for r in text] == [("anyio.Semaphore", "not recorded by anyio", f"main {where(S, 'sem')}")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyio_waits_in_ps(ls, backend):
    prog = _start(ls, backend)
    rows = {r["task name"]: r["waiting on"] for r in parse_table(ls.ok("ps", prog.pid, "-l", "-w").out)}
    assert rows["lock-waiter"] == f"anyio.Lock (created at {where(S, 'lock')}) held by task 'lock-holder'"
    assert rows["adapter-waiter"] == f"anyio.Lock (created at {where(S, 'adapter-lock')}) held by task 'adapter-holder'"
    assert rows["sem-waiter"] == f"anyio.Semaphore (created at {where(S, 'sem')}) (value=0) (anyio does not record who holds its permits)"
    assert rows["limiter-waiter"] == f"anyio.CapacityLimiter (created at {where(S, 'limiter')}) (1/1 borrowed) held by task 'limiter-holder'"
    assert rows["event-waiter"] == f"anyio.Event (created at {where(S, 'event')}) (set=False)"
    assert rows["cond-waiter"] == f"anyio.Condition (created at {where(S, 'cond')})"
    assert rows["receiver"] == f"anyio.MemoryObjectStream.receive (created at {where(S, 'empty-stream')}) (size 0/1)"
    assert rows["sender"] == f"anyio.MemoryObjectStream.send (created at {where(S, 'full-stream')}) (size 1/1)"


def test_anyio_lock_deadlock(ls):
    prog = _start(ls, "asyncio")
    rep = ls.ok("deadlocks", prog.pid, "--json").json()
    (cyc,) = rep["cycles"]
    by_task = {e["task"]["task_name"]: e for e in cyc["edges"]}
    assert set(by_task) == {"anyio-left", "anyio-right"}
    assert by_task["anyio-left"]["object_label"] == f"anyio.Lock (created at {where(S, 'lock-b')})"
    assert by_task["anyio-left"]["held_by"]["task_name"] == "anyio-right"
    assert by_task["anyio-right"]["object_label"] == f"anyio.Lock (created at {where(S, 'lock-a')})"
    for e in by_task.values():
        w = e["task"]["where"]
        assert f"{w['filename']}:{w['lineno']}" == where(S, "deadlock-waits")


@pytest.mark.parametrize("backend", BACKENDS)
def test_tasks_anyio_spawns_are_created_at_start_soon(ls, backend):
    """A task made by ``tg.start_soon`` was created at the user's
    ``start_soon`` line, not in anyio's ``_spawn``."""
    prog = _start(ls, backend)
    tasks = {t["name"]: t for t in ls.ok("ps", prog.pid, "--json").json()["tasks"]}
    assert tasks["leaf-1"]["site"] == f"nester {where(S, 'leaf-1')}", tasks["leaf-1"]
    assert "/anyio/" not in tasks["receiver"]["site"], tasks["receiver"]
