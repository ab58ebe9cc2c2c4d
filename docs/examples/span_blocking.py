"""Per-span blocking time with loopscope's task hooks and contextvars.

An APM keeps the active span in a ContextVar.  ``task_enter`` and
``task_leave`` run inside the task's own context, so they see the span of
the code that is about to run (or just ran) and can charge the step's
duration to it: the time that span kept the event loop busy.

Run it: ``python docs/examples/span_blocking.py``; it prints one line per
span, e.g. ``span checkout: blocking 61.3 ms in 4 steps``.
"""

import asyncio
import contextvars
import time

import loopscope
import loopscope.hooks


class Span:
    def __init__(self, name):
        self.name = name
        self.attributes = {"blocking": 0.0, "steps": 0}


#: The active span, as a tracer would keep it.
current_span: contextvars.ContextVar = contextvars.ContextVar("current_span", default=None)


class SpanBlocking:
    """Adds the duration of every task step to the active span's "blocking"."""

    def __init__(self):
        self._started = {}  # task -> (perf_counter at enter, span at enter)

    def task_enter(self, task):
        # runs on the loop thread, in the task's context, just before its step
        self._started[task] = (time.perf_counter(), current_span.get())

    def task_leave(self, task):
        # same context, just after the step: the span may have been set
        # (first step) or reset (last step) by the step itself
        t0, span_at_enter = self._started.pop(task, (None, None))
        span = current_span.get() or span_at_enter
        if t0 is not None and span is not None:
            span.attributes["blocking"] += time.perf_counter() - t0
            span.attributes["steps"] += 1

    def task_unregister(self, task):
        self._started.pop(task, None)  # a task that ended inside its step


async def handler(name, blocking_per_step):
    span = Span(name)
    token = current_span.set(span)
    try:
        for _ in range(3):
            time.sleep(blocking_per_step)  # synchronous work: the loop is blocked
            await asyncio.sleep(0.05)  # a real wait: not charged
    finally:
        current_span.reset(token)
    return span


async def main():
    return await asyncio.gather(
        asyncio.create_task(handler("checkout", 0.020)),
        asyncio.create_task(handler("search", 0.001)),
    )


if __name__ == "__main__":
    loopscope.install(server=False, dump_signal="")
    loopscope.hooks.add(SpanBlocking())
    for span in asyncio.run(main()):
        a = span.attributes
        print(f"span {span.name}: blocking {a['blocking'] * 1e3:.1f} ms in {a['steps']} steps")
