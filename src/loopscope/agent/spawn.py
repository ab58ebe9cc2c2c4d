"""Task creation without asyncio's layers: ``asyncio.create_task`` and
``BaseEventLoop.create_task`` replaced by functions that build the task
themselves when the loop's factory is loopscope's own.

Why: with a task factory set, one ``asyncio.create_task`` goes through four
Python calls before the task exists (``create_task``, ``loop.create_task``,
``_check_closed``, the factory) and a fifth after it (``_set_task_name``).
Each costs as much as a part of what loopscope records, and tracking has a
budget (issue 2: 1.25x on the spawn benchmark).  These replacements do
what asyncio plus our factory would do, in one call plus the recording.

They take the fast path only when the loop's task factory is loopscope's
plain one: on a ``BaseEventLoop`` the loop's ``_loopscope_fast`` names it;
on uvloop (whose ``create_task`` is compiled and cannot be replaced, and
whose loops take no attributes) ``asyncio.create_task`` looks the loop up
in ``_other`` and asks the loop for its factory, so a program that replaced
the factory is noticed by identity either way.  Anything else (a program's
own factory, eager tasks, a closed loop, another loop class) goes the way
asyncio goes, so behaviour and error messages stay asyncio's.
"""

from __future__ import annotations

import sys
from asyncio import base_events, events, tasks
from typing import Any

_getframe = sys._getframe
_get_running_loop = events._get_running_loop

#: The functions replaced, kept to restore them and for the slow path.
original_create_task = tasks.create_task
original_loop_create_task = base_events.BaseEventLoop.create_task

#: Loops that are not BaseEventLoops (uvloop) with our plain factory:
#: id(loop) -> (factory, task class, track, eager task class, the
#: factory's counter bump, EagerInit.at or None, the loop class's own
#: get_task_factory).  Kept in step by ``note_factory``; an entry left by a
#: dead loop fails the identity check against the next loop at that id.
_other: dict[int, tuple] = {}


def note_factory(loop: Any, factory: Any, getter: Any) -> None:
    """The agent set ``factory`` on ``loop``: enable or disable the fast path."""
    fast = getattr(factory, "loopscope_fast", None)
    if isinstance(loop, base_events.BaseEventLoop):
        loop._loopscope_fast = fast
    elif fast is not None and getter is not None:
        _other[id(loop)] = (*fast, getter)
    else:
        _other.pop(id(loop), None)


def forget(loop_id: int) -> None:
    _other.pop(loop_id, None)

if sys.version_info >= (3, 14):

    def create_task(coro: Any, **kwargs: Any) -> Any:
        """``asyncio.create_task``: the same behaviour, one call."""
        loop = _get_running_loop()
        if loop is None:
            return original_create_task(coro, **kwargs)  # asyncio's error
        if type(loop).create_task is loop_create_task:
            fast = loop._loopscope_fast
            if fast is not None and fast[0] is loop._task_factory and not loop._closed:
                if not kwargs:
                    # a plain call, not an empty **kwargs forwarded: 300
                    # instructions less per task
                    task = fast[1](coro, loop=loop)
                elif not kwargs.get("eager_start"):
                    task = fast[1](coro, loop=loop, **kwargs)
                else:
                    # what our factory does with an eager task (it records
                    # itself), without asyncio's two calls in between:
                    # aiohttp makes one per request this way; told the
                    # site's frame, an exact one makes no frame object
                    # for this call, and given the coroutine by name no
                    # tuple of arguments either (EagerInit.at)
                    fast[4]()
                    if fast[5] is not None:
                        return fast[5](_getframe(1), coro=coro, loop=loop, **kwargs)
                    return fast[3](coro, loop=loop, **kwargs)
                fast[2](task, loop, _getframe(1))
                return task
        elif _other:
            fast = _other.get(id(loop))
            if fast is not None and fast[0] is fast[6](loop) and not loop.is_closed() and (not kwargs or not kwargs.get("eager_start")):
                if kwargs:
                    # uvloop names a task after making it (a named task uses
                    # up a "Task-N" number): the same here
                    name = kwargs.pop("name", None)
                    task = fast[1](coro, loop=loop, **kwargs)
                    if name is not None:
                        task.set_name(name)
                else:
                    task = fast[1](coro, loop=loop)
                fast[2](task, loop, _getframe(1))
                return task
        return loop.create_task(coro, **kwargs)

    def loop_create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
        """``BaseEventLoop.create_task`` (TaskGroup, gather, ensure_future)."""
        fast = self._loopscope_fast
        if fast is not None and fast[0] is self._task_factory and not self._closed:
            if not kwargs:
                task = fast[1](coro, loop=self)  # see create_task
            elif not kwargs.get("eager_start"):
                task = fast[1](coro, loop=self, **kwargs)
            else:
                fast[4]()
                if fast[5] is not None:
                    return fast[5](_getframe(1), coro=coro, loop=self, **kwargs)
                return fast[3](coro, loop=self, **kwargs)
            fast[2](task, self, _getframe(1))
            return task
        return original_loop_create_task(self, coro, **kwargs)

else:
    _set_task_name = getattr(tasks, "_set_task_name", None)
    #: 3.11 and 3.12's create_task name the task after making it, so an
    #: unnamed "Task-N" number is used up even by a named task: the same
    #: here (read from asyncio's code: which patch release changed it).
    _NAME_AFTER = "_set_task_name" in original_create_task.__code__.co_names

    def create_task(coro: Any, *, name: Any = None, context: Any = None) -> Any:
        """``asyncio.create_task``: the same behaviour, one call."""
        loop = _get_running_loop()
        if loop is None:
            return original_create_task(coro, name=name, context=context)  # asyncio's error
        if type(loop).create_task is loop_create_task:
            fast = loop._loopscope_fast
            if fast is not None and fast[0] is loop._task_factory and not loop._closed:
                if _NAME_AFTER:
                    task = fast[1](coro, loop=loop, context=context)
                    if name is not None:
                        task.set_name(name)
                else:
                    task = fast[1](coro, loop=loop, name=name, context=context)
                fast[2](task, loop, _getframe(1))
                return task
        elif _other:
            fast = _other.get(id(loop))
            if fast is not None and fast[0] is fast[6](loop) and not loop.is_closed():
                # uvloop names a task after making it (a named task uses up
                # a "Task-N" number): the same here
                task = fast[1](coro, loop=loop, context=context)
                if name is not None:
                    task.set_name(name)
                fast[2](task, loop, _getframe(1))
                return task
        # another loop (uvloop): asyncio.create_task's own lines, so that the
        # factory finds the caller one frame up
        if not _NAME_AFTER:
            if context is None:
                return loop.create_task(coro, name=name)
            return loop.create_task(coro, name=name, context=context)
        task = loop.create_task(coro) if context is None else loop.create_task(coro, context=context)
        _set_task_name(task, name)
        return task

    def loop_create_task(self: Any, coro: Any, *, name: Any = None, context: Any = None) -> Any:
        """``BaseEventLoop.create_task`` (TaskGroup, gather, ensure_future)."""
        fast = self._loopscope_fast
        if fast is not None and fast[0] is self._task_factory and not self._closed:
            task = fast[1](coro, loop=self, name=name, context=context)
            fast[2](task, self, _getframe(1))
            return task
        return original_loop_create_task(self, coro, name=name, context=context)


create_task.__doc__ = original_create_task.__doc__
create_task.__wrapped__ = original_create_task  # type: ignore[attr-defined]
loop_create_task.__wrapped__ = original_loop_create_task  # type: ignore[attr-defined]
#: The replacement's frame is never a creation site (tracker.make_track).
CREATE_TASK_CODE = create_task.__code__


def install(patch: Any) -> None:
    """Put the replacements in place through the agent's ``patch(owner,
    name, value)``, which undoes them on uninstall.  ``_loopscope_fast`` is
    None on every loop until the agent attaches its factory to it."""
    patch(base_events.BaseEventLoop, "_loopscope_fast", None)
    patch(base_events.BaseEventLoop, "create_task", loop_create_task)
    patch(tasks, "create_task", create_task)
    import asyncio

    if asyncio.create_task is original_create_task:
        patch(asyncio, "create_task", create_task)
