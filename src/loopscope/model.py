"""The snapshot model: plain typed records with one JSON form.

Every producer (the in-process agent) and every consumer (the CLI, the TUI,
dump files) speaks in these records, so a dump taken in production opens in
exactly the same views as a live process.  The module imports only the
standard library because the agent imports it inside the monitored program.

The JSON form is ``dataclasses.asdict`` of the records; ``from_json`` rebuilds
them from their type hints.  ``SCHEMA_VERSION`` changes whenever a field is
removed or changes meaning (added optional fields do not bump it); readers
refuse a newer major schema with a clear error rather than misreading it.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

SCHEMA_VERSION = 1
DUMP_FORMAT = "loopscope-dump"


@dataclass(slots=True)
class Frame:
    """One Python frame: where a coroutine is suspended or code is running."""

    function: str
    filename: str
    lineno: int
    source: str | None = None
    locals: dict[str, str] | None = None

    def location(self) -> str:
        return f"{self.filename}:{self.lineno}"


@dataclass(slots=True)
class Site:
    """An interned creation site: the user frame around a create_task call."""

    id: int
    function: str
    filename: str
    lineno: int

    def label(self) -> str:
        return f"{self.function} {self.filename}:{self.lineno}"


@dataclass(slots=True)
class CreationLink:
    """One link of a creation chain: task ``task_id`` was created at ``frames``.

    ``parent_id``/``parent_name`` name the task that was running when the
    create_task call happened (None when created outside any task, e.g. by
    ``asyncio.run``).  A chain is a list of links: the task's own first, then
    its parent's, and so on up the ancestry.
    """

    task_id: str | None
    frames: list[Frame]
    created: float | None
    parent_id: str | None = None
    parent_name: str | None = None
    truncated: bool = False


@dataclass(slots=True)
class Awaiter:
    """A task that awaits another one, and through what (gather, TaskGroup…)."""

    task_id: str
    task_name: str
    via: str
    stack: list[Frame] = field(default_factory=list)


@dataclass(slots=True)
class WaitTarget:
    """What a suspended task is waiting on right now."""

    kind: str
    description: str
    task_id: str | None = None
    deadline_in: float | None = None
    object_id: str | None = None
    holder_id: str | None = None


@dataclass(slots=True)
class CancelRecord:
    """Who cancelled a task, from where, and where the victim was suspended."""

    at: float
    by_task_id: str | None
    by_task_name: str | None
    by_stack: list[Frame]
    message: str | None
    victim_stack: list[Frame]
    count: int = 1


@dataclass(slots=True)
class Outcome:
    """How a task ended.

    ``state`` is ``done``, ``failed``, ``cancelled`` or ``destroyed-pending``
    (garbage collected while still pending: asyncio's "Task was destroyed but
    it is pending!").  ``ended`` is when loopscope observed the end; see
    docs/architecture.md for how exact that is.
    """

    state: str
    ended: float
    result: str | None = None
    exc_type: str | None = None
    exc_message: str | None = None
    traceback: list[Frame] = field(default_factory=list)


@dataclass(slots=True)
class TaskInfo:
    """One task, live or finished.  Optional parts are filled on request."""

    id: str
    name: str
    coro: str
    state: str
    created: float | None
    age: float | None
    loop_id: str
    site_id: int | None = None
    site: str | None = None
    parent_id: str | None = None
    parent_name: str | None = None
    tracked: bool = True
    stack: list[Frame] | None = None
    awaiters: list[Awaiter] | None = None
    waiting_on: WaitTarget | None = None
    creation_chain: list[CreationLink] | None = None
    cancel: CancelRecord | None = None
    outcome: Outcome | None = None
    #: Step metrics (default loop, metrics on): steps (context switches),
    #: busy time (sum of its steps), idle time (age minus busy), time from
    #: creation to the first step, longest step.  Seconds; None if unknown.
    steps: int | None = None
    busy: float | None = None
    idle: float | None = None
    first_step: float | None = None
    longest: float | None = None


@dataclass(slots=True)
class LoopInfo:
    """One event loop the agent tracks, with its blocked state."""

    id: str
    kind: str
    thread_id: int | None
    thread_name: str | None
    running: bool
    live_tasks: int
    blocked: bool = False
    blocked_for: float | None = None
    blocked_since: float | None = None
    blocked_stack: list[Frame] | None = None


@dataclass(slots=True)
class Hello:
    """What an agent says about itself when a client connects."""

    protocol: int
    schema: int
    agent_version: str
    python: str
    implementation: str
    pid: int
    argv: list[str]
    started: float
    loops: list[LoopInfo]
    permissions: list[str]
    socket: str | None = None


@dataclass(slots=True)
class StatGroup:
    """One row of ``stats --by``: live tasks sharing a key."""

    key: str
    count: int
    oldest_age: float | None
    newest_age: float | None
    site_id: int | None = None


@dataclass(slots=True)
class TaskPage:
    """A sorted, filtered page of tasks plus the totals it came from."""

    total: int
    matched: int
    tasks: list[TaskInfo]
    loops: list[LoopInfo]


@dataclass(slots=True)
class TaskRef:
    """A task as seen from a primitive, a group or a wait-for edge.

    ``state`` is the task's state, or ``gone`` when it no longer exists;
    ``since``/``for_s`` say since when (wall clock) and for how long it holds
    or waits; ``where`` is the user line it waits at.
    """

    task_id: str
    task_name: str | None
    state: str
    role: str | None = None
    since: float | None = None
    for_s: float | None = None
    where: Frame | None = None


@dataclass(slots=True)
class PrimitiveInfo:
    """A live synchronization primitive: Lock, Semaphore, Event, Queue…

    ``tracked`` is False for an object created before the agent was
    installed (found from a task waiting on it); ``holders_known`` is False
    when it was acquired before the agent could see who did.
    """

    id: str
    kind: str
    state: str
    tracked: bool = True
    site: str | None = None
    created: float | None = None
    age: float | None = None
    locked: bool | None = None
    value: int | None = None
    is_set: bool | None = None
    size: int | None = None
    maxsize: int | None = None
    holders: list[TaskRef] = field(default_factory=list)
    holders_known: bool = True
    waiters: list[TaskRef] = field(default_factory=list)

    def label(self) -> str:
        return f"{self.kind} {self.id}" + (f" (created at {self.site})" if self.site else " (created before loopscope)")


@dataclass(slots=True)
class WaitEdge:
    """One step of a wait-for cycle: a task waits on an object (a primitive
    or another task); for a primitive, ``held_by`` names the next task."""

    task: TaskRef
    object_kind: str
    object_id: str
    object_label: str
    held_by: TaskRef | None = None


@dataclass(slots=True)
class Deadlock:
    """A cycle in the wait-for graph: none of these tasks can go on."""

    edges: list[WaitEdge]
    summary: str
    for_s: float | None = None


@dataclass(slots=True)
class Suspect:
    """A heuristic finding (not a proven deadlock)."""

    kind: str
    summary: str
    object_id: str | None = None
    tasks: list[TaskRef] = field(default_factory=list)


@dataclass(slots=True)
class DeadlockReport:
    """``graph.deadlocks``: proven cycles, and heuristic suspects."""

    cycles: list[Deadlock]
    suspects: list[Suspect]
    tasks: int
    edges: int
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class GroupInfo:
    """A task group (asyncio.TaskGroup or anyio's on asyncio)."""

    id: str
    kind: str
    state: str
    site: str | None = None
    created: float | None = None
    age: float | None = None
    parent_id: str | None = None
    parent_name: str | None = None
    children: list[TaskRef] = field(default_factory=list)
    finished_dropped: int = 0


@dataclass(slots=True)
class AsyncGenInfo:
    """A live async generator (seen through the loop's asyncgen hooks)."""

    id: str
    name: str
    state: str
    site: str | None = None
    created: float | None = None
    age: float | None = None
    frame: Frame | None = None
    owner_id: str | None = None
    owner_name: str | None = None
    loop_id: str | None = None


@dataclass(slots=True)
class Snapshot:
    """Everything the agent knows at one instant: the content of a dump file."""

    format: str
    schema: int
    taken_at: float
    hello: Hello
    tasks: list[TaskInfo]
    history: list[TaskInfo]
    #: The ``health`` report at the same instant (docs/metrics.md); free-form
    #: JSON so that new metrics do not need a schema change.
    health: Any = None
    primitives: list[PrimitiveInfo] | None = None
    deadlocks: DeadlockReport | None = None
    groups: list[GroupInfo] | None = None
    asyncgens: list[AsyncGenInfo] | None = None


T = TypeVar("T")


def to_json(record: Any) -> Any:
    """Turn a record (or list of records) into plain JSON-able data."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    if isinstance(record, list):
        return [to_json(r) for r in record]
    return record


class SchemaError(ValueError):
    """Raised when data does not match the model (corrupt or foreign input)."""


def from_json(cls: type[T], data: Any) -> T:
    """Rebuild a record of type ``cls`` from its JSON form, checking shapes."""
    return typing.cast(T, _convert(cls, data, cls.__name__))


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls, vars(sys.modules[__name__]))
        _HINTS[cls] = hints
    return hints


def _convert(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], data, where)
    if origin is list:
        if not isinstance(data, list):
            raise SchemaError(f"{where}: expected a list, got {type(data).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(item, x, f"{where}[{i}]") for i, x in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise SchemaError(f"{where}: expected an object, got {type(data).__name__}")
        return {str(k): str(v) for k, v in data.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise SchemaError(f"{where}: expected an object, got {type(data).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{where}: missing field {f.name!r}")
        return tp(**kwargs)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise SchemaError(f"{where}: expected a number, got {type(data).__name__}")
        return float(data)
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise SchemaError(f"{where}: expected an integer, got {type(data).__name__}")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise SchemaError(f"{where}: expected a string, got {type(data).__name__}")
        return data
    if tp is bool:
        if not isinstance(data, bool):
            raise SchemaError(f"{where}: expected true/false, got {type(data).__name__}")
        return data
    if tp is Any:
        return data
    raise SchemaError(f"{where}: unsupported type {tp!r}")
