"""Library integrations: where a library bypasses the task factory.

aiohttp (3.10+) creates its connection and request-handler tasks with
``asyncio.Task(coro, loop=loop, eager_start=True)`` on Python 3.12+ (and on
3.14+ with loops that are not ``BaseEventLoop``, such as uvloop), so no task
factory sees them.  Those are exactly the tasks a user of a web service
wants to see created.  Rather than replacing ``asyncio.Task`` for the whole
process, we give the library module its own view of ``asyncio`` in which
``Task`` is loopscope's (``Tracker.view_task_class``: calling it makes an
exact ``asyncio.Task`` with its record while exact tasks are on, else a
task of the eager tracked class): everything else is asyncio's, unchanged.

The same import hook lets the agent patch ``uvloop.Loop`` (a Python
subclass of uvloop's Cython loop) the way it patches ``BaseEventLoop``.
Modules already imported are patched at install.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

# module name -> the global names in it that should see our Task class
TASK_CONSTRUCTOR_USERS: dict[str, str] = {
    "aiohttp.web_protocol": "asyncio",
}


#: Where a view keeps the real module, so that it is known for a view and
#: can be undone.
_REAL = "_loopscope_real"


def asyncio_view(real: types.ModuleType, task_class: type) -> types.ModuleType:
    """``asyncio`` as seen by one library module, with a tracked ``Task``.

    Why an exact ``ModuleType`` holding a copy of the namespace, with no
    module ``__getattr__``: CPython specializes ``module.name`` only on exact
    modules without one (``LOAD_ATTR_MODULE``).  A subclass, or a
    ``__getattr__`` forwarding to the real module, made every ``asyncio.X``
    in the library's per-request code a generic lookup (about 20 ns more
    each on 3.11-3.13, measured).  The copy is taken at install, as before,
    so a name asyncio gains after that is not in the view; asyncio defines
    every name at import (it has no lazy attributes), so none is missed."""
    view = types.ModuleType(real.__name__, real.__doc__)
    view.__dict__.update({k: v for k, v in vars(real).items() if not (k.startswith("__") and k.endswith("__"))})
    view.__dict__[_REAL] = real
    view.__dict__["Task"] = task_class
    return view


def is_view(module: object) -> bool:
    return isinstance(module, types.ModuleType) and _REAL in vars(module)


def patch_module(module: types.ModuleType, task_class: type) -> bool:
    name = TASK_CONSTRUCTOR_USERS.get(module.__name__)
    real = getattr(module, name, None) if name else None
    if real is None or is_view(real):
        return False
    setattr(module, name, asyncio_view(real, task_class))
    return True


def unpatch_module(module: types.ModuleType) -> None:
    name = TASK_CONSTRUCTOR_USERS.get(module.__name__)
    view = getattr(module, name, None) if name else None
    if is_view(view):
        setattr(module, name, vars(view)[_REAL])


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, patch: Callable[[types.ModuleType], Any]) -> None:
        self.inner = inner
        self.patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.inner.exec_module(module)
        try:
            self.patch(module)
        except Exception:  # noqa: BLE001 - an integration must never break an import
            pass


class ImportHook(importlib.abc.MetaPathFinder):
    """Runs a callback on watched modules right after they are executed."""

    def __init__(self, callbacks: dict[str, Callable[[types.ModuleType], Any]]) -> None:
        self.callbacks = callbacks
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        callback = self.callbacks.get(fullname)
        if callback is None or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, callback)  # type: ignore[arg-type]
        return spec


def install(task_class: type, extra: dict[str, Callable[[types.ModuleType], Any]] | None = None) -> ImportHook:
    """Patch watched modules now if imported, and on import from now on."""

    def patch(module: types.ModuleType) -> None:
        patch_module(module, task_class)

    callbacks: dict[str, Callable[[types.ModuleType], Any]] = {name: patch for name in TASK_CONSTRUCTOR_USERS}
    callbacks.update(extra or {})
    for name, callback in callbacks.items():
        module = sys.modules.get(name)
        if module is not None:
            try:
                callback(module)
            except Exception:  # noqa: BLE001
                pass
    hook = ImportHook(callbacks)
    sys.meta_path.insert(0, hook)
    return hook


def uninstall(hook: ImportHook | None) -> None:
    if hook is not None and hook in sys.meta_path:
        sys.meta_path.remove(hook)
    for name in TASK_CONSTRUCTOR_USERS:
        module = sys.modules.get(name)
        if module is not None:
            unpatch_module(module)
