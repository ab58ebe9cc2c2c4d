"""Task hooks for APM and tracing: ``task_register``, ``task_enter``,
``task_leave``, ``task_unregister``.

::

    import loopscope, loopscope.hooks

    class Spans:
        def task_enter(self, task): ...   # runs inside the task's context
        def task_leave(self, task): ...

    loopscope.install()
    loopscope.hooks.add(Spans())
    # or: loopscope.hooks.add(task_enter=fn, task_leave=fn)

See ``loopscope.agent.hooks`` for the contract (threads, contexts, costs,
what a hook must not do) and docs/hooks.md for a worked example.
"""

from __future__ import annotations

from .agent.hooks import EVENTS, HOOKS

add = HOOKS.add
remove = HOOKS.remove
clear = HOOKS.clear

__all__ = ["EVENTS", "add", "remove", "clear"]
