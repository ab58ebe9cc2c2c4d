"""Sorting, filtering and grouping of task records.

One implementation serves both sides of the process boundary: the agent runs
it over its live tasks (so only a page crosses the socket) and the CLI runs
it over a dump file.  Standard library only, because the agent imports it.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .model import StatGroup, TaskInfo

SORT_KEYS = ("age", "created", "name", "coro", "state", "site", "id", "busy", "steps", "switches", "longest")
#: Numeric keys sort largest first by default (the busiest task on top).
_NUMERIC = {"busy": "busy", "steps": "steps", "switches": "steps", "longest": "longest"}
GROUP_KEYS = ("site", "name", "coro", "state")
STATES = ("pending", "running", "cancelling", "done", "failed", "cancelled", "destroyed-pending")


class QueryError(ValueError):
    """A sort key, filter or grouping the user asked for does not exist."""


@dataclass
class TaskFilter:
    """Conditions a task must all meet.  Globs are case-sensitive fnmatch."""

    name: str | None = None
    coro: str | None = None
    state: str | None = None
    site: str | None = None
    min_age: float | None = None

    @classmethod
    def from_params(cls, params: dict | None) -> TaskFilter:
        params = params or {}
        if not isinstance(params, dict):
            raise QueryError("filter must be an object")
        unknown = set(params) - {"name", "coro", "state", "site", "min_age"}
        if unknown:
            raise QueryError(f"unknown filter field(s): {', '.join(sorted(unknown))}")
        f = cls(**params)
        for key in ("name", "coro", "state", "site"):
            val = getattr(f, key)
            if val is not None and not isinstance(val, str):
                raise QueryError(f"filter {key} must be a string")
        if f.state is not None:
            states = f.state.split(",")
            bad = [s for s in states if s not in STATES]
            if bad:
                raise QueryError(f"unknown state {bad[0]!r} (one of: {', '.join(STATES)})")
        if f.min_age is not None:
            if isinstance(f.min_age, bool) or not isinstance(f.min_age, (int, float)):
                raise QueryError("filter min_age must be a number of seconds")
        return f

    @classmethod
    def parse(cls, text: str) -> TaskFilter:
        """Parse the CLI form: ``name=worker-* state=pending min_age=5``.

        A bare word is a name glob, which is what people type first.
        """
        params: dict[str, object] = {}
        for word in text.split():
            key, sep, value = word.partition("=")
            if not sep:
                key, value = "name", word
            if key in ("age", "min_age"):
                try:
                    params["min_age"] = parse_duration(value)
                except ValueError as e:
                    raise QueryError(str(e)) from None
            else:
                params[key] = value
        return cls.from_params(params)

    def to_params(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def matches(self, t: TaskInfo) -> bool:
        if self.name is not None and not fnmatch.fnmatchcase(t.name, self.name):
            return False
        if self.coro is not None and not fnmatch.fnmatchcase(t.coro, self.coro):
            return False
        if self.state is not None and t.state not in self.state.split(","):
            return False
        if self.site is not None:
            site = t.site or ""
            pattern = self.site if any(c in self.site for c in "*?[") else f"*{self.site}*"
            if not fnmatch.fnmatchcase(site, pattern):
                return False
        if self.min_age is not None and (t.age is None or t.age < self.min_age):
            return False
        return True


def parse_duration(text: str) -> float:
    """``90``, ``1.5s``, ``500ms``, ``2m``, ``1h`` → seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    t = text.strip().lower()
    for suffix in ("ms", "s", "m", "h"):
        if t.endswith(suffix):
            try:
                return float(t[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (try 5, 5s, 500ms, 2m)") from None


def parse_sort(sort: str | None) -> tuple[str, bool]:
    """``age`` / ``-age`` → (key, descending).  Age sorts oldest first."""
    if not sort:
        return "age", True
    desc = sort.startswith("-")
    key = sort.lstrip("-+")
    if key not in SORT_KEYS:
        raise QueryError(f"cannot sort by {key!r} (one of: {', '.join(SORT_KEYS)})")
    if key == "age" or key in _NUMERIC:
        desc = not desc
    return key, desc


def sort_key(sort: str | None) -> tuple[Callable[[TaskInfo], float | str], bool]:
    """(key function, reverse) for a sort spec.

    Keys are plain floats or strings, never tuples: the garbage collector
    does not track those, so sorting 100,000 tasks inside the agent does not
    push it into a full collection (which would stall the monitored loop).
    Unknown values sort last whichever the direction; age sorts oldest first.
    """
    key, desc = parse_sort(sort)
    inf = float("inf")
    if key in _NUMERIC:
        attr = _NUMERIC[key]
        if desc:  # the default for these: largest first
            return (lambda t: -v if (v := getattr(t, attr)) is not None else inf), False
        return (lambda t: v if (v := getattr(t, attr)) is not None else inf), False
    if key in ("age", "created"):
        if desc:
            return (lambda t: -v if (v := getattr(t, key)) is not None else inf), False
        return (lambda t: v if (v := getattr(t, key)) is not None else inf), False
    if desc:
        return (lambda t: "\x01" + v if (v := getattr(t, key)) is not None else "\x00"), True
    return (lambda t: "\x00" + v if (v := getattr(t, key)) is not None else "\x01"), False


CHUNK = 4096


def pick(keys: list[Any], limit: int | None, offset: int, reverse: bool) -> list[int]:
    """Indices of the requested page, ordered by ``keys`` (stable).

    Built to run inside a monitored process next to its event loop: with a
    limit it keeps a heap of ``offset + limit``; without one it sorts chunks
    and merges them lazily, so no single C-level sort holds the GIL (and
    stalls the loop) for the whole list.
    """
    if offset < 0 or (limit is not None and limit < 0):
        raise QueryError("limit and offset must not be negative")
    kf = keys.__getitem__
    indices = range(len(keys))
    if limit is not None:
        n = offset + limit
        best = heapq.nlargest(n, indices, key=kf) if reverse else heapq.nsmallest(n, indices, key=kf)
        return best[offset:]
    chunks = [sorted(indices[i : i + CHUNK], key=kf, reverse=reverse) for i in range(0, len(keys), CHUNK)]
    return list(itertools.islice(heapq.merge(*chunks, key=kf, reverse=reverse), offset, None))


def select(tasks: Iterable[TaskInfo], flt: TaskFilter, sort: str | None, limit: int | None, offset: int = 0) -> tuple[int, list[TaskInfo]]:
    """Filter, sort and page; returns (number matched, the page)."""
    keyfn, reverse = sort_key(sort)
    matched = [t for t in tasks if flt.matches(t)]
    keys = [keyfn(t) for t in matched]
    return len(matched), [matched[i] for i in pick(keys, limit, offset, reverse)]


def group(tasks: Iterable[TaskInfo], by: str, flt: TaskFilter | None = None, limit: int | None = None) -> list[StatGroup]:
    """Count tasks per key with their oldest and newest ages, biggest first."""
    return list(ranked_groups(tasks, by, flt, limit))


def ranked_groups(tasks: Iterable[TaskInfo], by: str, flt: TaskFilter | None = None, limit: int | None = None) -> Iterator[StatGroup]:
    """``group``, lazily: records are made one at a time as they are read.

    Accumulates in dicts of plain numbers (which the garbage collector does
    not track) and ranks with ``pick``; inside the agent, 100,000 distinct
    names must not mean 100,000 live objects or one long C-level sort.
    """
    if by not in GROUP_KEYS:
        raise QueryError(f"cannot group by {by!r} (one of: {', '.join(GROUP_KEYS)})")
    counts: dict[str, int] = {}
    oldest: dict[str, float] = {}
    newest: dict[str, float] = {}
    site_ids: dict[str, int] = {}
    for t in tasks:
        if flt is not None and not flt.matches(t):
            continue
        key = getattr(t, by)
        if key is None:
            key = "(unknown: created before loopscope)" if by == "site" else "(none)"
        counts[key] = counts.get(key, 0) + 1
        if by == "site" and t.site_id is not None:
            site_ids[key] = t.site_id
        if t.age is not None:
            if t.age > oldest.get(key, -1.0):
                oldest[key] = t.age
            if t.age < newest.get(key, float("inf")):
                newest[key] = t.age
    names = list(counts)
    alphabetical = [names[i] for i in pick(names, None, 0, False)]
    by_count = [-counts[k] for k in alphabetical]
    for i in pick(by_count, limit, 0, False):
        k = alphabetical[i]
        yield StatGroup(k, counts[k], oldest.get(k), newest.get(k), site_ids.get(k))


def select_history(tasks: list[TaskInfo], flt: TaskFilter, sort: str | None, limit: int | None) -> tuple[int, list[TaskInfo]]:
    """History pages: most recently ended first unless a sort is given."""
    if sort:
        return select(tasks, flt, sort, limit)
    matched = [t for t in tasks if flt.matches(t)]
    keys = [t.outcome.ended if t.outcome else 0.0 for t in matched]
    return len(matched), [matched[i] for i in pick(keys, limit, 0, True)]
