"""The task index (3.14+): a loop's tasks read without ``asyncio.all_tasks``.

The compiled registry holds borrowed pointers, so what matters most is that
every task leaves it before it is freed, whichever way it was made and
however it dies; and that a query reading the index finds exactly the tasks
``all_tasks`` would.  test_scale.py measures what it is for: the loop's
pause while a query reads 100,000 tasks.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys

import pytest

import loopscope
from loopscope.agent import taskindex, tracker
from loopscope.agent.loops import live_tasks
from loopscope.agent.taskindex import FULL_SCAN_BELOW, INDEX

pytestmark = [
    pytest.mark.skipif(not taskindex.WANTED, reason="the index exists only where asyncio.all_tasks is one C call holding the GIL (3.14+)"),
    pytest.mark.skipif(tracker._speedups is None, reason="the index lives in the compiled parts, not built here (optional outside CI)"),
]

sp = tracker._speedups


def listed() -> int:
    return INDEX.state()[1]


def listed_ids() -> set[int]:
    return {id(t) for t in sp.registry_tasks()}


async def sleeper() -> None:
    await asyncio.sleep(3600)


async def settle() -> None:
    """Let finished tasks' last callbacks run (a Handle holds the task as
    its argument until the next iteration), then collect cycles."""
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()


def run_installed(main, **options) -> object:
    with loopscope.installed(server=False, dump_signal="none", **options) as agent:
        assert INDEX.active, "the index should be on for this install"
        return asyncio.run(main(agent))


@pytest.mark.parametrize("metrics", [True, False], ids=["hooked-loop", "no-step-hook"])
def test_every_task_leaves_the_registry_whichever_way_it_ends(metrics: bool):
    """Finished, failed, cancelled, and freed while still pending (asyncio
    logs "Task was destroyed but it is pending!"): each leaves."""

    async def fail() -> None:
        raise ValueError("no")

    async def quick() -> int:
        return 1

    async def main(agent):
        before = listed()
        cls = type(asyncio.create_task(quick()))
        if agent.tracker.exact_on:
            assert cls is asyncio.Task  # its record listed beside it
        else:
            assert issubclass(cls, agent.tracker.task_class if metrics else agent.tracker.del_task_class)
        tasks = [asyncio.create_task(quick()) for _ in range(50)]
        tasks += [asyncio.create_task(fail()) for _ in range(50)]
        tasks += [asyncio.create_task(sleeper()) for _ in range(50)]
        assert listed() >= before + 150
        await asyncio.sleep(0)
        for t in tasks[100:]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ids = {id(t) for t in tasks}
        assert ids <= listed_ids()  # still referenced: still listed
        del tasks, t
        await settle()
        assert not ids & listed_ids()

        # a pending task nobody references, in a reference cycle with its
        # coroutine: only the cycle collector frees it
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        async def stuck() -> None:
            await fut

        t = asyncio.create_task(stuck())
        await asyncio.sleep(0)
        lost = id(t)
        assert lost in listed_ids()
        del t, fut
        await settle()
        gc.collect()
        assert lost not in listed_ids()
        return True

    assert run_installed(main, metrics=metrics)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
def test_eager_tasks_are_listed_and_leave():
    async def quick() -> int:
        return 1

    async def main(agent):
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        done_at_once = [asyncio.create_task(quick()) for _ in range(20)]
        waiting = [asyncio.create_task(sleeper()) for _ in range(20)]
        assert all(t.done() for t in done_at_once)
        assert all(isinstance(t, agent.tracker.eager_task_class) for t in waiting)
        ids = {id(t) for t in done_at_once + waiting}
        assert ids <= listed_ids()
        assert set(waiting) <= set(live_tasks(loop))
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        del done_at_once, waiting, t
        await settle()
        assert not ids & listed_ids()
        return True

    assert run_installed(main)


def test_at_scale_a_query_reads_the_index_and_finds_what_all_tasks_finds():
    async def main(agent):
        loop = asyncio.get_running_loop()
        outside_before = asyncio.Task(sleeper(), loop=loop)  # not from the factory
        ours = [asyncio.create_task(sleeper()) for _ in range(FULL_SCAN_BELOW + 500)]
        await asyncio.sleep(0)
        for t in ours[:100]:
            t.cancel()
        await asyncio.sleep(0)

        # the first read at scale since the loop was adopted is all_tasks'
        # (the outsider was made after adoption): it notes the outsider
        INDEX.reconciled.pop(id(loop), None)
        assert INDEX.tasks(loop) is None
        first = live_tasks(loop)
        assert set(first) == asyncio.all_tasks(loop)
        assert outside_before in INDEX.outsiders

        # then the index answers, with the same tasks, outsider included
        via_index = INDEX.tasks(loop)
        assert via_index is not None
        assert len(via_index) == len(set(via_index))
        assert set(via_index) == asyncio.all_tasks(loop)
        assert outside_before in via_index

        # a task made outside the factory now is missed until the next
        # reconciliation (at most RECONCILE_S later), then found
        outside_after = asyncio.Task(sleeper(), loop=loop)
        assert outside_after not in INDEX.tasks(loop)
        INDEX.reconciled[id(loop)] -= taskindex.RECONCILE_S + 1
        assert outside_after in live_tasks(loop)  # all_tasks again
        assert outside_after in INDEX.tasks(loop)

        for t in [*ours, outside_before, outside_after]:
            t.cancel()
        await asyncio.gather(*ours, outside_before, outside_after, return_exceptions=True)
        return True

    assert run_installed(main)


def test_the_table_stays_right_through_growth_shrinking_and_random_removal():
    """Linear probing with backward-shift deletion: after any order of
    removals every listed task is still found, and only those."""

    async def main(agent):
        rng = random.Random(7)
        # held, so that no address among them is reused by a task made here
        before = sp.registry_tasks()
        base = {id(t) for t in before}
        tasks = [asyncio.create_task(sleeper()) for _ in range(30_000)]
        bits_grown = INDEX.state()[3]
        await asyncio.sleep(0)
        for _ in range(4):
            rng.shuffle(tasks)
            gone, tasks = tasks[: len(tasks) * 3 // 4], tasks[len(tasks) * 3 // 4 :]
            for t in gone:
                t.cancel()
            del t  # the loop variable would keep the last one alive
            await asyncio.gather(*gone, return_exceptions=True)
            del gone
            await settle()
            assert listed_ids() - base == {id(t) for t in tasks}
        assert INDEX.state()[3] < bits_grown  # it shrank
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return True

    assert run_installed(main)


def test_it_refuses_what_it_cannot_list_safely():
    loop = asyncio.new_event_loop()
    try:
        plain = asyncio.Task(sleeper(), loop=loop)
        with pytest.raises(TypeError, match="loopscope's tasks only"):
            sp.registry_add(plain)  # its finaliser would not unlist it
        plain.cancel()
        loop.run_until_complete(asyncio.gather(plain, return_exceptions=True))
    finally:
        loop.close()

    class OwnFinaliser(asyncio.Task):
        def __del__(self) -> None:
            pass

    class Plain(asyncio.Task):
        pass

    # a class with a finaliser of its own cannot get the registry's
    assert sp.registry_enable(asyncio.Task, (OwnFinaliser,), ()) is False
    # a del class must have its own __del__ (the one that unlists)
    assert sp.registry_enable(asyncio.Task, (), (Plain,)) is False
