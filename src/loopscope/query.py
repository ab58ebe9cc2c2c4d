"""Sorting, filtering and grouping of task records.

One implementation serves both sides of the process boundary: the agent runs
it over its live tasks (so only a page crosses the socket) and the CLI runs
it over a dump file.  Standard library only, because the agent imports it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from .model import StatGroup, TaskInfo

SORT_KEYS = ("age", "created", "name", "coro", "state", "site", "id")
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
    if key == "age":
        desc = not desc
    return key, desc


def _sort_value(key: str):  # type: ignore[no-untyped-def]
    if key == "age":
        return lambda t: (t.age is None, t.age or 0.0)
    if key == "created":
        return lambda t: (t.created is None, t.created or 0.0)
    if key == "site":
        return lambda t: (t.site is None, t.site or "")
    return lambda t: getattr(t, key)


def select(tasks: Iterable[TaskInfo], flt: TaskFilter, sort: str | None, limit: int | None, offset: int = 0) -> tuple[int, list[TaskInfo]]:
    """Filter, sort and page; returns (number matched, the page)."""
    key, desc = parse_sort(sort)
    matched = [t for t in tasks if flt.matches(t)]
    if key == "age" and desc:
        # oldest first; untracked tasks (age unknown) last
        matched.sort(key=lambda t: (t.age is None, -(t.age or 0.0)))
    else:
        matched.sort(key=_sort_value(key), reverse=desc)
    if offset < 0 or (limit is not None and limit < 0):
        raise QueryError("limit and offset must not be negative")
    end = None if limit is None else offset + limit
    return len(matched), matched[offset:end]


def group(tasks: Iterable[TaskInfo], by: str, flt: TaskFilter | None = None) -> list[StatGroup]:
    """Count tasks per key with their oldest and newest ages, biggest first."""
    if by not in GROUP_KEYS:
        raise QueryError(f"cannot group by {by!r} (one of: {', '.join(GROUP_KEYS)})")
    groups: dict[str, StatGroup] = {}
    for t in tasks:
        if flt is not None and not flt.matches(t):
            continue
        key = getattr(t, by)
        if key is None:
            key = "(unknown: created before loopscope)" if by == "site" else "(none)"
        g = groups.get(key)
        if g is None:
            g = groups[key] = StatGroup(key, 0, None, None, t.site_id if by == "site" else None)
        g.count += 1
        if t.age is not None:
            if g.oldest_age is None or t.age > g.oldest_age:
                g.oldest_age = t.age
            if g.newest_age is None or t.age < g.newest_age:
                g.newest_age = t.age
    return sorted(groups.values(), key=lambda g: (-g.count, g.key))


def select_history(tasks: list[TaskInfo], flt: TaskFilter, sort: str | None, limit: int | None) -> tuple[int, list[TaskInfo]]:
    """History pages: most recently ended first unless a sort is given."""
    if sort:
        return select(tasks, flt, sort, limit)
    matched = [t for t in tasks if flt.matches(t)]
    matched.sort(key=lambda t: t.outcome.ended if t.outcome else 0.0, reverse=True)
    if limit is not None and limit < 0:
        raise QueryError("limit must not be negative")
    return len(matched), matched[:limit]
