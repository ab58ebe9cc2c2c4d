"""Records about objects the agent must never keep alive, with no Python
code run per entry.

``weakref.WeakKeyDictionary`` runs Python twice for every object: its
``__setitem__`` builds a ``KeyedRef`` (a subclass of ``weakref.ref`` whose
``__new__`` and ``__init__`` are Python), and every freed key calls its
Python ``_remove``.  The agent records each asyncio primitive the program
makes, each task group and each async generator, and servers make those per
request (uvicorn: an ``asyncio.Event`` for every request).  Here a key is a
plain ``weakref.ref`` whose callback is the dict's own ``pop``: adding an
entry is a weak reference and a dict store, and a freed object leaves the
dict without a Python frame.

Entries leave only through that callback, once per key, so the key is
always there to pop.  Registering a live object again keeps the first key
(dict semantics) and drops the new reference before its referent, whose
callback therefore never runs.
"""

from __future__ import annotations

import weakref
from typing import Any

_ref = weakref.ref
_MISSING = object()


class WeakRegistry:
    """obj -> record, weak on obj.  Readers in other threads use ``live``."""

    __slots__ = ("data", "_pop")

    def __init__(self) -> None:
        self.data: dict[weakref.ref[Any], Any] = {}
        self._pop = self.data.pop

    def __setitem__(self, obj: Any, record: Any) -> None:
        self.data[_ref(obj, self._pop)] = record

    def get(self, obj: Any, default: Any = None) -> Any:
        """The record of ``obj``; ``default`` also for an object that cannot
        be a key (not weakly referenceable, or unhashable)."""
        try:
            return self.data.get(_ref(obj), default)
        except TypeError:
            return default

    def __contains__(self, obj: Any) -> bool:
        return self.get(obj, _MISSING) is not _MISSING

    def __len__(self) -> int:
        return len(self.data)

    def live(self) -> list[tuple[Any, Any]]:
        """(object, record) for every live entry, from any thread: the copy
        is retried if the owning thread changed the dict meanwhile."""
        for _ in range(5):
            try:
                items = list(self.data.items())
                break
            except RuntimeError:  # changed size while copying
                continue
        else:
            return []
        out = []
        for ref, record in items:
            obj = ref()
            if obj is not None:
                out.append((obj, record))
        return out
