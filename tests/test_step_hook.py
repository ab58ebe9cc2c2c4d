"""The step hook never harms the program, whatever state a task is in."""

from __future__ import annotations

import asyncio

import loopscope
from loopscope.agent import core, steps


def test_a_task_with_broken_bookkeeping_still_runs_and_the_error_is_counted():
    async def child() -> int:
        await asyncio.sleep(0)
        return 7

    async def main() -> int:
        task = asyncio.create_task(child())
        del task._ls_created  # as if recording its origin had failed
        return await task

    with loopscope.installed(server=False, dump_signal="") as agent:
        before = agent.tracker.errors
        assert asyncio.run(main()) == 7
        assert agent.tracker.errors > before
        assert "AttributeError" in (agent.tracker.last_error or "")


def test_exceptions_from_callbacks_are_reported_like_asyncio_does():
    seen: list[dict] = []

    def boom() -> None:
        raise ValueError("from a callback")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        loop.call_soon(boom)
        await asyncio.sleep(0.01)

    with loopscope.installed(server=False, dump_signal="") as agent:
        assert asyncio.events.Handle._run is agent.step_hook.fast
        asyncio.run(main())
    assert len(seen) == 1
    assert seen[0]["message"].startswith("Exception in callback ") and "boom" in seen[0]["message"]
    assert isinstance(seen[0]["exception"], ValueError)
    assert asyncio.events.Handle._run is steps._original_run  # uninstalled


def test_steps_are_timed_and_attributed_to_their_task():
    async def worker() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def main() -> tuple[int, float]:
        t = asyncio.create_task(worker())
        await t
        return t._ls_steps, t._ls_busy

    with loopscope.installed(server=False, dump_signal=""):
        n, busy = asyncio.run(main())
        assert n == 6 and busy > 0  # the first step and five wakeups
        assert core.current() is not None


def test_watchdog_sleeps_until_a_loop_could_be_late():
    """On a healthy, busy loop the watchdog wakes when a loop could first be
    late (next beat + half the slow-step threshold), not every ``watchdog``
    seconds: each wake-up takes the GIL from the loop.  Polling every 20 ms
    would be ~50 wake-ups in this second; beats every 50 ms allow ~10-20."""
    import asyncio
    import time

    import loopscope
    from loopscope.agent.watchdog import Watchdog

    polls = []
    original = Watchdog.poll

    def counting(self):  # noqa: ANN001, ANN202
        polls.append(time.monotonic())
        return original(self)

    async def busy() -> None:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            await asyncio.sleep(0)

    Watchdog.poll = counting
    try:
        with loopscope.installed(server=False, dump_signal="", watchdog=0.02, heartbeat=0.05, slow_step=0.1):
            asyncio.run(busy())
    finally:
        Watchdog.poll = original
    assert 3 <= len(polls) <= 30, len(polls)
