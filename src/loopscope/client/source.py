"""One interface over a live agent and a dump file.

Every read command works the same on both: a live ``AgentSource`` asks the
agent (which sorts, filters and pages on its side), a ``DumpSource`` runs the
very same ``loopscope.query`` functions over the snapshot it loaded.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Protocol

from ..model import DUMP_FORMAT, SCHEMA_VERSION, SchemaError, Snapshot, TaskInfo, from_json, to_json
from ..query import TaskFilter, group, select, select_history
from .connection import Connection, RemoteError, pid_alive
from .discovery import socket_for_pid
from .errors import ClientError


class Source(Protocol):
    kind: str
    label: str

    def hello(self) -> dict[str, Any]: ...
    def tasks(self, flt: TaskFilter, sort: str | None, limit: int | None, detail: str) -> dict[str, Any]: ...
    def graph(self, flt: TaskFilter, sort: str | None, limit: int | None) -> dict[str, Any]: ...
    def task(self, ref: str, locals_: bool) -> dict[str, Any]: ...
    def history(self, kind: str, flt: TaskFilter, sort: str | None, limit: int | None, detail: bool) -> dict[str, Any]: ...
    def stats(self, by: str, flt: TaskFilter, limit: int | None) -> dict[str, Any]: ...
    def snapshot(self) -> dict[str, Any]: ...
    def health(self, top: int) -> dict[str, Any]: ...
    def close(self) -> None: ...


class AgentSource:
    kind = "agent"

    def __init__(self, path: str, pid: int | None) -> None:
        self.conn = Connection(path, pid)
        self._hello = self.conn.hello()
        self.pid = self._hello.get("pid", pid)
        self.label = f"pid {self.pid}"

    def hello(self) -> dict[str, Any]:
        return self._hello

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        try:
            return self.conn.call(method, params)
        except RemoteError as e:
            raise ClientError(str(e)) from None

    def tasks(self, flt: TaskFilter, sort: str | None, limit: int | None, detail: str) -> dict[str, Any]:
        return self._call("tasks.list", {"filter": flt.to_params(), "sort": sort, "limit": limit, "detail": detail})

    def graph(self, flt: TaskFilter, sort: str | None, limit: int | None) -> dict[str, Any]:
        return self._call("tasks.graph", {"filter": flt.to_params(), "sort": sort, "limit": limit})

    def task(self, ref: str, locals_: bool) -> dict[str, Any]:
        return self._call("tasks.get", {"task": ref, "locals": locals_})

    def history(self, kind: str, flt: TaskFilter, sort: str | None, limit: int | None, detail: bool) -> dict[str, Any]:
        return self._call("history.list", {"kind": kind, "filter": flt.to_params(), "sort": sort, "limit": limit, "detail": detail})

    def stats(self, by: str, flt: TaskFilter, limit: int | None) -> dict[str, Any]:
        return self._call("stats", {"by": by, "filter": flt.to_params(), "limit": limit})

    def snapshot(self) -> dict[str, Any]:
        return self._call("snapshot", {})

    def health(self, top: int = 10) -> dict[str, Any]:
        return self._call("health", {"top": top})

    def cancel(self, ref: str, message: str | None) -> dict[str, Any]:
        return self._call("tasks.cancel", {"task": ref, "message": message})

    def close(self) -> None:
        self.conn.close()


def _strip(info: TaskInfo, detail: str) -> TaskInfo:
    if detail == "summary":
        info.stack = info.awaiters = info.creation_chain = None
        info.waiting_on = None
    return info


class DumpSource:
    """A snapshot file from ``loopscope dump`` or the dump signal."""

    kind = "dump"

    def __init__(self, path: str) -> None:
        self.path = path
        self.label = f"dump {os.path.basename(path)}"
        self.snap = load_dump(path)

    def hello(self) -> dict[str, Any]:
        return to_json(self.snap.hello)

    def _aged(self, tasks: list[TaskInfo]) -> list[TaskInfo]:
        return tasks

    def tasks(self, flt: TaskFilter, sort: str | None, limit: int | None, detail: str) -> dict[str, Any]:
        matched, page = select(self.snap.tasks, flt, sort, limit)
        import copy

        page = [_strip(copy.copy(t), detail) for t in page]
        return {"total": len(self.snap.tasks), "matched": matched, "tasks": to_json(page), "loops": to_json(self.snap.hello.loops)}

    def graph(self, flt: TaskFilter, sort: str | None, limit: int | None) -> dict[str, Any]:
        matched, page = select(self.snap.tasks, flt, sort, limit)
        out = to_json(page)
        # a dump stores each stack once; awaiters refer to their task by id
        by_id = {t.id: t for t in self.snap.tasks}
        for t in out:
            for aw in t.get("awaiters") or []:
                if not aw.get("stack") and aw["task_id"] in by_id:
                    aw["stack"] = to_json(by_id[aw["task_id"]].stack or [])
        return {"total": len(self.snap.tasks), "matched": matched, "tasks": out, "loops": to_json(self.snap.hello.loops)}

    def task(self, ref: str, locals_: bool) -> dict[str, Any]:
        for pool in (self.snap.tasks, list(reversed(self.snap.history))):
            hits = [t for t in pool if t.id == ref] or [t for t in pool if t.name == ref]
            if len(hits) > 1 and pool is self.snap.tasks:
                ids = ", ".join(t.id for t in hits[:5])
                raise ClientError(f"{len(hits)} tasks are named {ref!r}; use an id ({ids}…)")
            if hits:
                return to_json(hits[0])
        raise ClientError(f"no task {ref!r} in {self.path}")

    def history(self, kind: str, flt: TaskFilter, sort: str | None, limit: int | None, detail: bool) -> dict[str, Any]:
        pool = [t for t in self.snap.history if kind == "all" or t.state == kind or (kind == "failed" and t.state == "destroyed-pending")]
        matched, page = select_history(pool, flt, sort, limit)
        return {"total": len(pool), "matched": matched, "tasks": to_json(page)}

    def stats(self, by: str, flt: TaskFilter, limit: int | None) -> dict[str, Any]:
        if limit is not None and limit < 0:
            raise ClientError("limit must not be negative")
        groups = group(self.snap.tasks, by, flt, limit)
        return {"by": by, "total": len(self.snap.tasks), "groups": to_json(groups), "loops": to_json(self.snap.hello.loops)}

    def snapshot(self) -> dict[str, Any]:
        return to_json(self.snap)

    def health(self, top: int = 10) -> dict[str, Any]:
        if not isinstance(self.snap.health, dict) or not isinstance(self.snap.health.get("loops"), list):
            raise ClientError(f"{self.path} holds no health data (written by an agent without metrics)")
        return self.snap.health

    def close(self) -> None:
        pass


def load_dump(path: str) -> Snapshot:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ClientError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ClientError(f"{path} is a directory, not a dump file") from None
    except PermissionError:
        raise ClientError(f"permission denied reading {path}") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ClientError(f"{path} is not a loopscope dump (not valid JSON: {e})") from None
    except RecursionError:
        raise ClientError(f"{path} is not a loopscope dump (JSON nested too deeply)") from None
    if not isinstance(data, dict) or data.get("format") != DUMP_FORMAT:
        raise ClientError(f"{path} is not a loopscope dump (no '{DUMP_FORMAT}' format marker)")
    schema = data.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise ClientError(f"{path} uses dump schema {schema}; this loopscope reads up to {SCHEMA_VERSION} (upgrade loopscope)")
    try:
        return from_json(Snapshot, data)
    except SchemaError as e:
        raise ClientError(f"{path} is a corrupt loopscope dump: {e}") from None
    except RecursionError:
        raise ClientError(f"{path} is a corrupt loopscope dump (records nested too deeply)") from None


def open_target(target: str) -> AgentSource | DumpSource:
    """A pid, an agent socket path, or a dump file."""
    if target.isdigit():
        pid = int(target)
        path = socket_for_pid(pid)
        if not os.path.exists(path):
            if not pid_alive(pid):
                raise ClientError(f"no such process: {pid}")
            raise ClientError(
                f"process {pid} has no loopscope agent (start it with `loopscope run -- …` or call loopscope.install())"
            )
        return AgentSource(path, pid)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        raise ClientError(f"no such process or file: {target}") from None
    except PermissionError:
        raise ClientError(f"permission denied: {target}") from None
    if stat.S_ISSOCK(st.st_mode):
        name = os.path.basename(target)
        pid = int(name[:-5]) if name.endswith(".sock") and name[:-5].isdigit() else None
        return AgentSource(target, pid)
    return DumpSource(target)
