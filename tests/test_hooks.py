"""The hooks API (``loopscope.hooks``) in this process, on real loops.

The agent is installed for each test (no server, no signal), the hooks are
cleared before and after, and the program under observation is an ordinary
coroutine run with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import subprocess
import sys
import threading
from asyncio import events
from pathlib import Path

import pytest

import loopscope
import loopscope.hooks

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def agent():
    loopscope.hooks.clear()
    with loopscope.installed(server=False, dump_signal="") as ag:
        try:
            yield ag
        finally:
            loopscope.hooks.clear()


class Recorder:
    """Records every event, by task (on 3.11-3.13 ``create_task`` names a
    task only after the factory returned, so ``task_register`` may see its
    default name): ``of(name)`` reads the events of the task named so now."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.threads: set[int] = set()

    def _rec(self, what: str, task) -> None:
        self.events.append((what, task))
        self.threads.add(threading.get_ident())

    def task_register(self, task):
        self._rec("register", task)

    def task_enter(self, task):
        self._rec("enter", task)

    def task_leave(self, task):
        self._rec("leave", task)

    def task_unregister(self, task):
        self._rec("unregister", task)

    def of(self, name: str) -> list[str]:
        return [w for w, t in self.events if t.get_name() == name]


def test_events_in_order_and_one_pair_per_step(agent):
    rec = Recorder()
    assert loopscope.hooks.add(rec) is rec
    assert events.Handle._run is agent.step_hook.hooked

    async def three_steps():
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return 7

    async def fails():
        await asyncio.sleep(0)
        raise ValueError("no")

    async def forever():
        await asyncio.sleep(3600)

    async def main():
        loop_thread = threading.get_ident()
        ok = asyncio.create_task(three_steps(), name="x-ok")
        bad = asyncio.create_task(fails(), name="x-bad")
        victim = asyncio.create_task(forever(), name="x-victim")
        # registered by the factory, before any step
        assert [(w, t) for w, t in rec.events if t in (ok, bad, victim)] == [("register", ok), ("register", bad), ("register", victim)]
        await asyncio.sleep(0)
        victim.cancel()
        res = await asyncio.gather(ok, bad, victim, return_exceptions=True)
        return loop_thread, res, (ok, bad, victim)

    loop_thread, res, (ok, bad, victim) = asyncio.run(main())
    assert res[0] == 7 and isinstance(res[1], ValueError) and isinstance(res[2], asyncio.CancelledError)
    assert rec.threads == {loop_thread}
    for task, steps in ((ok, 3), (bad, 2), (victim, 2)):
        name = task.get_name()
        assert task._ls_steps == steps, name
        assert rec.of(name) == ["register"] + ["enter", "leave"] * steps + ["unregister"], name


def test_enter_and_leave_run_in_the_tasks_context(agent):
    var: contextvars.ContextVar[str | None] = contextvars.ContextVar("span", default=None)
    seen: list[tuple[str, str, str | None]] = []

    def enter(task):
        if task.get_name().startswith("ctx-"):
            seen.append(("enter", task.get_name(), var.get()))

    def leave(task):
        if task.get_name().startswith("ctx-"):
            seen.append(("leave", task.get_name(), var.get()))

    inst = loopscope.hooks.add(task_enter=enter, task_leave=leave)
    assert "task_enter" in repr(inst)

    async def worker(i):
        var.set(f"span-{i}")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def main():
        var.set("main's")
        tasks = [asyncio.create_task(worker(i), name=f"ctx-{i}") for i in range(2)]
        await asyncio.gather(*tasks)
        return var.get()

    assert asyncio.run(main()) == "main's"
    for i in range(2):
        mine = [(w, v) for w, n, v in seen if n == f"ctx-{i}"]
        # the first enter sees the value copied from main's context at creation;
        # leave sees what the step set; later enters see the task's own value
        assert mine == [
            ("enter", "main's"),
            ("leave", f"span-{i}"),
            ("enter", f"span-{i}"),
            ("leave", f"span-{i}"),
            ("enter", f"span-{i}"),
            ("leave", f"span-{i}"),
        ], mine


@pytest.mark.parametrize("event", ["task_register", "task_enter", "task_leave", "task_unregister"])
def test_a_raising_hook_is_removed_and_logged(agent, caplog, event):
    calls: list[str] = []
    other: list[str] = []

    def bad(task):
        calls.append(task.get_name())
        raise RuntimeError("boom from the hook")

    bad_inst = loopscope.hooks.add(**{event: bad})
    good = loopscope.hooks.add(task_leave=lambda t: other.append(t.get_name()))

    async def victim():
        await asyncio.sleep(0)
        return 42

    async def main():
        results = []
        for i in range(3):
            results.append(await asyncio.create_task(victim(), name=f"victim-{i}"))
        return results

    with caplog.at_level(logging.ERROR, logger="loopscope"):
        assert asyncio.run(main()) == [42, 42, 42]
    assert len(calls) == 1, calls  # removed after its first failure
    errors = [r for r in caplog.records if r.name == "loopscope" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    msg = errors[0].getMessage()
    assert event in msg and "RuntimeError" in msg and "boom from the hook" in msg and "removed" in msg, msg
    from loopscope.agent.hooks import HOOKS

    assert bad_inst not in HOOKS.instruments and good in HOOKS.instruments
    # the other instrument kept working for every task
    assert [n for n in other if n.startswith("victim-")] == ["victim-0"] * 2 + ["victim-1"] * 2 + ["victim-2"] * 2


def test_clear_and_remove_restore_the_fast_step(agent):
    assert events.Handle._run is agent.step_hook.fast
    inst = loopscope.hooks.add(task_enter=lambda t: None)
    assert events.Handle._run is agent.step_hook.hooked
    loopscope.hooks.remove(inst)
    assert events.Handle._run is agent.step_hook.fast
    # register/unregister alone never need the slower step
    loopscope.hooks.add(task_register=lambda t: None, task_unregister=lambda t: None)
    assert events.Handle._run is agent.step_hook.fast
    loopscope.hooks.add(task_leave=lambda t: None)
    assert events.Handle._run is agent.step_hook.hooked
    loopscope.hooks.clear()
    assert events.Handle._run is agent.step_hook.fast

    async def main():
        return 1

    assert asyncio.run(main()) == 1


def test_hooks_set_before_install_take_effect():
    seen: list[str] = []
    loopscope.hooks.clear()
    loopscope.hooks.add(task_enter=lambda t: seen.append(t.get_name()))
    try:
        with loopscope.installed(server=False, dump_signal="") as ag:
            assert events.Handle._run is ag.step_hook.hooked

            async def main():
                await asyncio.create_task(asyncio.sleep(0), name="early")

            asyncio.run(main())
    finally:
        loopscope.hooks.clear()
    assert seen.count("early") == 2
    # uninstalled: asyncio's own step is back
    from loopscope.agent.steps import _original_run

    assert events.Handle._run is _original_run


def test_keyword_form_and_type_errors(agent):
    f = lambda t: None  # noqa: E731
    with pytest.raises(TypeError, match="unknown hook 'task_start'"):
        loopscope.hooks.add(task_start=f)
    with pytest.raises(TypeError):
        loopscope.hooks.add()
    with pytest.raises(TypeError):
        loopscope.hooks.add(object())
    with pytest.raises(TypeError):
        loopscope.hooks.add(Recorder(), task_enter=f)
    with pytest.raises(TypeError, match="not callable"):
        loopscope.hooks.add(task_enter=3)
    from loopscope.agent.hooks import HOOKS

    assert HOOKS.instruments == []
    assert events.Handle._run is agent.step_hook.fast
    assert loopscope.hooks.EVENTS == ("task_register", "task_enter", "task_leave", "task_unregister")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is new in 3.12")
def test_eager_tasks_first_step_has_no_enter_leave(agent):
    rec = Recorder()
    loopscope.hooks.add(rec)

    async def one_await():
        await asyncio.sleep(0)
        return 1

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        t = asyncio.create_task(one_await(), name="e-suspends")
        # its first step ran in create_task; registered after it
        assert rec.of("e-suspends") == ["register"]
        assert await t == 1
        return t

    t = asyncio.run(main())
    assert t._ls_steps == 2
    assert rec.of("e-suspends") == ["register", "enter", "leave", "unregister"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is new in 3.12")
def test_eager_task_done_in_its_constructor_registers_before_unregistering(agent):
    """A task must be registered before it is unregistered, also when it
    finishes in its eager first step (inside create_task)."""
    rec = Recorder()
    loopscope.hooks.add(rec)

    async def immediate():
        return 1

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        t = asyncio.create_task(immediate(), name="e-immediate")
        assert t.done()
        return await t

    assert asyncio.run(main()) == 1
    assert rec.of("e-immediate") == ["register", "unregister"]


def test_docs_example_span_blocking_runs():
    script = ROOT / "docs" / "examples" / "span_blocking.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSCOPE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 0, proc.stderr
    # (a venv's stale .pth file may complain on stderr: not ours)
    assert [line for line in proc.stderr.splitlines() if ".pth" not in line] == [], proc.stderr
    spans = {}
    for line in proc.stdout.splitlines():
        # span checkout: blocking 62.4 ms in 4 steps
        name, rest = line.split(": blocking ")
        ms, _, steps = rest.partition(" ms in ")
        spans[name.removeprefix("span ")] = (float(ms), int(steps.split()[0]))
    assert set(spans) == {"checkout", "search"}, proc.stdout
    # checkout blocks 3 x 20 ms, search 3 x 1 ms, and each waits 3 x 50 ms;
    # both run 4 steps.  The lower bounds are exact (a sleep never returns
    # early); the upper ones leave this shared machine room for scheduling
    # noise and still fail if the waits were charged (+150 ms) or if
    # checkout's blocks were charged to search (+60 ms).
    assert 60 <= spans["checkout"][0] < 150, spans
    assert 3 <= spans["search"][0] < 50, spans
    assert spans["checkout"][1] == spans["search"][1] == 4, spans


@pytest.mark.skipif(sys.version_info < (3, 14), reason="create_task(eager_start=True) is new in 3.14")
def test_eager_start_task_is_registered(agent):
    """``create_task(..., eager_start=True)`` (3.14+) goes through the task
    factory too: the task gets task_register like every other task."""
    rec = Recorder()
    loopscope.hooks.add(rec)

    async def one_await():
        await asyncio.sleep(0)
        return 1

    async def main():
        t = asyncio.get_running_loop().create_task(one_await(), name="e-start", eager_start=True)
        assert await t == 1
        return t

    t = asyncio.run(main())
    assert t._ls_steps == 2
    assert rec.of("e-start") == ["register", "enter", "leave", "unregister"]
