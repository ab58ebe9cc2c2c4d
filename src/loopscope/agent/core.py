"""The agent: what ``loopscope.install()`` switches on inside a process.

It hooks two places in asyncio so that *every* loop is tracked without any
change to the program:

* ``asyncio.events._set_running_loop`` — called by every loop when it starts
  running (the default loops, and uvloop, which takes asyncio's function when
  it is imported; ``loopscope run`` installs before the program imports it).
* ``BaseEventLoop.__init__`` and ``set_task_factory`` — so a default loop is
  tracked from its birth (``asyncio.run`` creates the main task before the
  loop runs) and keeps our factory outermost if the program sets its own.

Everything the agent adds runs inside ``try``: a failure is counted and the
program goes on as if loopscope were not there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from asyncio import base_events, events
from typing import Any

from . import integrations, spawn
from .config import Config, default_socket_dir, load
from .introspect import Introspector
from .loops import LoopRegistry
from .metrics import Executors
from .methods import Methods, snapshot_json
from .steps import StepHook
from .watchdog import Watchdog
from .server import Server, ServerError, warn
from .tracker import Tracker, is_our_factory, make_factory

_lock = threading.Lock()
_agent: Agent | None = None
_fork_hook_registered = False
_ABSENT = object()


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = time.time()
        self.pid = os.getpid()
        self.tracker = Tracker(config)
        self.introspector = Introspector(self.tracker)
        self.loops = LoopRegistry(config, self.tracker)
        self.primitive_tracker: Any = None  # agent/primitives.py, when config.primitives
        self.group_tracker: Any = None  # agent/groups.py
        self.methods = Methods(self)
        self.step_hook = StepHook(self.tracker) if config.metrics else None
        self.executors = Executors()
        self.watchdog = Watchdog(self)
        self.prometheus: Any = None
        self.server: Server | None = None
        self._patches: list[tuple[Any, str, Any]] = []
        self._import_hook: Any = None
        self._dump_event = threading.Event()
        self._dumper: threading.Thread | None = None
        self._old_signal: Any = None
        self._signum: int | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        # before any factory is made: they take the tracker's eager_new
        self.tracker.enable_exact()
        if self.step_hook is not None:
            self.step_hook.install()
            self.loops.steps_hooked = True
        self._patch()
        extra: dict[str, Any] = {"uvloop": self._patch_uvloop}
        if self.config.primitives:
            extra.update(self._install_waits())
        try:
            self._import_hook = integrations.install(self.tracker.view_task_class, extra)
        except Exception as e:  # noqa: BLE001
            self.tracker.note_error(e)
        if self.config.server:
            self._start_server()
        self._install_signal()
        self.watchdog.start()
        if self.config.prometheus:
            self._start_prometheus()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self.loops.on_running(loop)

    def stop(self) -> None:
        self.watchdog.stop()
        if self.step_hook is not None:
            self.step_hook.uninstall()
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        for owner, name, original in reversed(self._patches):
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._patches.clear()
        for part in (self.primitive_tracker, self.group_tracker):
            if part is not None:
                part.uninstall()
        self.loops.running_hooks.clear()
        integrations.uninstall(self._import_hook)
        self._import_hook = None
        self.loops.detach_all()
        self.tracker.disable_exact()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._signum is not None and threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(self._signum) == self._on_signal:
                    signal.signal(self._signum, self._old_signal)
            except (ValueError, OSError):
                pass
        self._signum = None
        self.tracker.enabled = False

    def _start_prometheus(self) -> None:
        from .prometheus import MetricsServer

        try:
            self.prometheus = MetricsServer(self, self.config.prometheus)
            self.prometheus.start()
        except (OSError, ValueError) as e:
            warn(f"Prometheus endpoint not started on {self.config.prometheus!r}: {e}")
            self.prometheus = None

    def _start_server(self) -> None:
        directory = self.config.socket_dir or default_socket_dir()
        try:
            server = Server(directory, self.methods.call, self.tracker.note_error)
            server.start()
        except (ServerError, OSError) as e:
            warn(f"server not started: {e}")
            return
        self.server = server

    def after_fork_in_child(self) -> None:
        """A forked child (gunicorn, multiprocessing) gets its own socket and
        forgets the parent's loops and history: they describe another process.
        A loop the child goes on running is attached again when it runs."""
        self.pid = os.getpid()
        self.started = time.time()
        self.server = None
        self.loops.forget_all()
        self.tracker.forget_history()
        if self._signum is not None:
            self._dump_event = threading.Event()
            self._dumper = threading.Thread(target=self._dump_loop, name="loopscope-dumper", daemon=True)
            self._dumper.start()
        if self.config.server:
            self._start_server()
        # The parent's metrics endpoint (thread, port) does not follow a fork:
        # workers of a pre-fork server are scraped through their own means.
        self.prometheus = None
        self.watchdog = Watchdog(self)
        self.watchdog.start()

    # -- hooks into asyncio -----------------------------------------------------

    def _patch(self) -> None:
        agent = self
        orig_set_running = events._set_running_loop

        def _set_running_loop(loop: Any) -> None:
            orig_set_running(loop)
            if loop is not None:
                try:
                    agent.loops.on_running(loop)
                except Exception as e:  # noqa: BLE001
                    agent.tracker.note_error(e)

        _set_running_loop.__wrapped__ = orig_set_running  # type: ignore[attr-defined]
        self._set(events, "_set_running_loop", _set_running_loop)
        if getattr(asyncio, "_set_running_loop", None) is orig_set_running:
            self._set(asyncio, "_set_running_loop", _set_running_loop)

        self._patch_loop_class(base_events.BaseEventLoop)
        spawn.install(self._set)
        orig_ceh = base_events.BaseEventLoop.call_exception_handler

        tr = agent.tracker
        recorded_on_release = (tr.del_task_class, tr.eager_task_class)

        def call_exception_handler(loop: Any, context: dict[str, Any]) -> None:
            """Tasks collected while still pending never finish a step: the
            C finaliser reports them here, which is where we record those of
            ``TrackedTask``.  The other classes' ``__del__``, and exact
            tasks' finaliser, record theirs before asyncio's finaliser runs
            (recording them here too counted each twice)."""
            try:
                task = context.get("task") if isinstance(context, dict) else None
                if task is not None and isinstance(task, tr.task_class) and not isinstance(task, recorded_on_release) and not task.done():
                    tr.record_end(task)
            except Exception as e:  # noqa: BLE001
                agent.tracker.note_error(e)
            orig_ceh(loop, context)

        self._set(base_events.BaseEventLoop, "call_exception_handler", call_exception_handler)

    def _install_waits(self) -> dict[str, Any]:
        """Primitives, task groups, async generators (agent/primitives.py,
        agent/groups.py): patches on asyncio's classes, undone by stop()."""
        from .groups import GroupTracker
        from .primitives import ANYIO_CLASSES, PrimitiveTracker

        try:
            pt = self.primitive_tracker = PrimitiveTracker(self.tracker)
            pt.install()
            gt = self.group_tracker = GroupTracker(self.tracker)
            gt.install()
            self.loops.running_hooks.append(gt.watch_agens)
        except Exception as e:  # noqa: BLE001
            self.tracker.note_error(e)
            return {}

        # anyio imports these modules with the package, its asyncio backend
        # when a program first runs on it
        hooks: dict[str, Any] = {name: pt.patch_anyio for name in ANYIO_CLASSES}
        hooks["anyio._backends._asyncio"] = gt.patch_anyio
        hooks["janus"] = pt.patch_janus
        return hooks

    def _patch_uvloop(self, module: Any) -> None:
        """``uvloop.Loop`` is a Python subclass of the Cython loop: patch it
        like BaseEventLoop, so its main task is tracked from birth and a
        program's own task factory is chained, not lost."""
        loop_class = getattr(module, "Loop", None)
        if isinstance(loop_class, type) and not any(p[0] is loop_class for p in self._patches):
            self._patch_loop_class(loop_class)

    def _patch_loop_class(self, cls: type) -> None:
        agent = self
        orig_init = cls.__init__

        def __init__(loop: Any, *args: Any, **kwargs: Any) -> None:
            orig_init(loop, *args, **kwargs)
            try:
                agent.loops.attach(loop)
            except Exception as e:  # noqa: BLE001
                agent.tracker.note_error(e)

        self._set(cls, "__init__", __init__)
        orig_stf = cls.set_task_factory
        orig_gtf = cls.get_task_factory

        def set_task_factory(loop: Any, factory: Any) -> None:
            if not is_our_factory(factory) and id(loop) in agent.loops._states:
                try:
                    st = agent.loops._states.get(id(loop))
                    factory = make_factory(agent.tracker, factory, loop, st is not None and st.hooked)
                except Exception as e:  # noqa: BLE001
                    agent.tracker.note_error(e)
            orig_stf(loop, factory)
            # agent/spawn.py builds tasks itself while this factory is set
            spawn.note_factory(loop, factory, orig_gtf)

        self._set(cls, "set_task_factory", set_task_factory)

        def get_task_factory(loop: Any) -> Any:
            """What the program set (or None): ours stays invisible."""
            factory = orig_gtf(loop)
            if is_our_factory(factory):
                return getattr(factory, "loopscope_inner", None)
            return factory

        get_task_factory.loopscope_original = orig_gtf  # type: ignore[attr-defined]
        self._set(cls, "get_task_factory", get_task_factory)

    def _set(self, owner: Any, name: str, value: Any) -> None:
        if isinstance(owner, type):
            # restore exactly what the class itself had (absent: inherited)
            original = owner.__dict__.get(name, _ABSENT)
        else:
            original = getattr(owner, name)
        self._patches.append((owner, name, original))
        setattr(owner, name, value)

    # -- dumps ------------------------------------------------------------------

    def snapshot_json(self) -> str:
        """The JSON text of a Snapshot (what a dump file holds)."""
        return snapshot_json(self)

    def dump_to(self, path: str) -> str:
        text = self.snapshot_json()
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    def _install_signal(self) -> None:
        name = (self.config.dump_signal or "").upper()
        if name in ("", "NONE", "OFF", "0"):
            return
        signum = getattr(signal, name if name.startswith("SIG") else "SIG" + name, None)
        if not isinstance(signum, int):
            warn(f"unknown dump signal {self.config.dump_signal!r}")
            return
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            current = signal.getsignal(signum)
        except ValueError:
            return
        if current not in (signal.SIG_DFL, None):
            if self.config.verbose:
                warn(f"{name} already has a handler; signal dumps are off")
            return
        self._old_signal = current
        signal.signal(signum, self._on_signal)
        self._signum = signum
        self._dumper = threading.Thread(target=self._dump_loop, name="loopscope-dumper", daemon=True)
        self._dumper.start()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # The handler runs on the main thread, between bytecodes of whatever
        # the program is doing: do nothing but wake the dumper thread.
        self._dump_event.set()

    def _dump_loop(self) -> None:
        while True:
            self._dump_event.wait()
            self._dump_event.clear()
            if self._signum is None:
                return
            directory = self.config.dump_dir or (self.server.directory if self.server else default_socket_dir())
            now = time.time()
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
            path = os.path.join(directory, f"loopscope-{os.getpid()}-{stamp}.json")
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                self.dump_to(path)
                print(f"loopscope: dump written to {path}", file=sys.stderr)
            except Exception as e:  # noqa: BLE001
                self.tracker.note_error(e)
                warn(f"dump failed: {e}")


def install(loop: Any = None, **options: Any) -> Agent:
    """Track every event loop in this process and start the agent's server.

    Idempotent: a second call returns the running agent (and attaches
    ``loop`` if given).  Options are the fields of ``Config``; they override
    ``LOOPSCOPE_*`` environment variables.
    """
    global _agent, _fork_hook_registered
    with _lock:
        if _agent is None:
            agent = Agent(load(**options))
            agent.start()
            _agent = agent
            if not _fork_hook_registered and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork)
                _fork_hook_registered = True
        agent = _agent
    if loop is not None:
        agent.loops.attach(loop)
        if loop.is_running():
            agent.loops.on_running(loop)
    return agent


def uninstall() -> None:
    """Remove every hook, restore task factories, stop the server."""
    global _agent
    with _lock:
        agent, _agent = _agent, None
    if agent is not None:
        agent.stop()


def current() -> Agent | None:
    return _agent


def _after_fork() -> None:
    agent = _agent
    if agent is not None:
        try:
            agent.after_fork_in_child()
        except Exception:  # noqa: BLE001 - never break a fork
            pass
