"""The filter/sort/group rules shared by the agent and dump files."""

from __future__ import annotations

import pytest

from loopscope.model import TaskInfo
from loopscope.query import QueryError, TaskFilter, group, parse_duration, pick, select


def task(name: str, age: float | None, *, coro: str = "work", state: str = "pending", site: str | None = "main app.py:3") -> TaskInfo:
    return TaskInfo(id=hex(abs(hash(name))), name=name, coro=coro, state=state, created=None if age is None else 1000 - age, age=age, loop_id="0x1", site=site)


TASKS = [task("a", 5.0), task("b", 50.0, coro="fetch"), task("c", None, site=None), task("d", 0.5, state="running")]


def names(ts: list[TaskInfo]) -> list[str]:
    return [t.name for t in ts]


def test_age_sorts_oldest_first_and_unknown_last_both_ways() -> None:
    assert names(select(TASKS, TaskFilter(), "age", None)[1]) == ["b", "a", "d", "c"]
    assert names(select(TASKS, TaskFilter(), "-age", None)[1]) == ["d", "a", "b", "c"]
    assert names(select(TASKS, TaskFilter(), "created", None)[1]) == ["b", "a", "d", "c"]


def test_text_sorts_put_missing_values_last() -> None:
    assert names(select(TASKS, TaskFilter(), "site", None)[1])[-1] == "c"
    assert names(select(TASKS, TaskFilter(), "-site", None)[1])[-1] == "c"
    assert names(select(TASKS, TaskFilter(), "-name", None)[1]) == ["d", "c", "b", "a"]


def test_limit_and_offset_page_through_the_same_order() -> None:
    full = names(select(TASKS, TaskFilter(), "name", None)[1])
    pages = [names(select(TASKS, TaskFilter(), "name", 2, off)[1]) for off in (0, 2)]
    assert pages[0] + pages[1] == full
    assert select(TASKS, TaskFilter(), "name", 1)[0] == 4  # matched counts all


def test_chunked_sort_equals_plain_sort() -> None:
    pairs = [((i * 7919) % 10007, i) for i in range(20_000)]
    assert pick(pairs, None, 0, False) == [i for _, i in sorted(pairs)]
    assert pick(pairs, None, 5, True) == [i for _, i in sorted(pairs, reverse=True)][5:]
    assert pick(pairs, 10, 3, False) == [i for _, i in sorted(pairs)][3:13]


def test_filters_combine() -> None:
    flt = TaskFilter.parse("state=pending min_age=1s site=app.py")
    assert names([t for t in TASKS if flt.matches(t)]) == ["a", "b"]
    assert names([t for t in TASKS if TaskFilter.parse("coro=fet*").matches(t)]) == ["b"]
    assert names([t for t in TASKS if TaskFilter.parse("?").matches(t)]) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "text,error",
    [("state=sleeping", "unknown state"), ("min_age=soon", "not a duration"), ("colour=red", "unknown filter")],
)
def test_bad_filters_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(QueryError, match=error):
        TaskFilter.parse(text)


def test_bad_sort_key_is_refused() -> None:
    with pytest.raises(QueryError, match="cannot sort by 'colour'"):
        select(TASKS, TaskFilter(), "colour", None)


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("1.5") == 1.5


def test_group_counts_and_ages_biggest_first() -> None:
    groups = group(TASKS + [task("e", 9.0)], "site")
    assert [(g.key, g.count) for g in groups] == [("main app.py:3", 4), ("(unknown: created before loopscope)", 1)]
    assert groups[0].oldest_age == 50.0 and groups[0].newest_age == 0.5
    assert [g.key for g in group(TASKS, "coro", limit=1)] == ["work"]
    with pytest.raises(QueryError):
        group(TASKS, "colour")
