"""Agent options: keyword arguments to ``install`` or ``LOOPSCOPE_*`` variables.

Environment variables exist so that ``loopscope run -- CMD`` can configure an
agent inside a process it does not control; keyword arguments win over them.
A malformed variable is reported on stderr and ignored, never fatal: the
monitored program must start even when its monitor is misconfigured.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field


@dataclass
class Config:
    #: Start the socket server thread (off only for in-process use and tests).
    server: bool = True
    #: Directory for the per-process sockets; default $XDG_RUNTIME_DIR/loopscope
    #: or /tmp/loopscope-$UID, created 0700.
    socket_dir: str = ""
    #: User frames kept per creation site (each costs a frame lookup per task).
    creation_frames: int = 1
    #: Links kept in a creation chain before older ancestors are dropped.
    max_chain: int = 32
    #: Frames kept in a cancellation/exception record.
    max_frames: int = 32
    #: Finished tasks kept per outcome (done, failed, cancelled) ...
    #: (clean completions: sampled above max(this, 1000) at once, a tenth of that a second)
    history_size: int = 1000
    #: ... and for at most this many seconds (0: no age limit).
    history_age: float = 3600.0
    #: Signal that writes a dump file ("" or "none" to disable).
    dump_signal: str = "SIGUSR1"
    #: Where signal dumps go (default: the socket directory).
    dump_dir: str = ""
    #: How often the loop proves it is alive, in seconds.
    heartbeat: float = 0.05
    #: A loop silent for longer than this is reported as blocked.
    blocked_after: float = 0.25
    #: Time every step of the default loop (step histogram, busy time, exact
    #: task ends, blocking steps).  Off: only creation tracking and the lag probe.
    metrics: bool = True
    #: Use the compiled step hook and creation record (agent/_speedups.c)
    #: where they were built; off: the Python ones, which do the same at
    #: several times the cost.
    speedups: bool = True
    #: With the compiled parts: make the tasks loopscope's factory makes
    #: (and on 3.14+ the eager ones, aiohttp's per request) exact
    #: ``asyncio.Task`` objects, their records kept beside them, rather than
    #: instances of loopscope's subclass, which CPython runs down slower
    #: paths (agent/_speedups.c, "Exact tasks").
    exact_tasks: bool = True
    #: A step longer than this (seconds) is recorded as a blocking step.
    slow_step: float = 0.1
    #: The watchdog thread's shortest sleep (seconds); it otherwise sleeps
    #: until a loop's heartbeat could be late.
    watchdog: float = 0.02
    #: Seconds of one-per-second health samples kept (lag, utilisation, p99, live).
    series_seconds: int = 600
    #: Serve Prometheus metrics on [HOST:]PORT ("" = off).
    prometheus: str = ""
    #: Clients may cancel tasks (a separate, explicit permission).
    allow_cancel: bool = False
    #: Track synchronization primitives, task groups and async generators.
    primitives: bool = True
    #: Show the agent's own warnings on stderr.
    verbose: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def _parse(tp: object, raw: str) -> object:
    if tp in (bool, "bool"):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if tp in (int, "int"):
        return int(raw)
    if tp in (float, "float"):
        return float(raw)
    return raw


def load(**overrides: object) -> Config:
    """Build a Config from LOOPSCOPE_* variables, then keyword overrides."""
    cfg = Config()
    for f in dataclasses.fields(Config):
        if f.name == "extra":
            continue
        raw = os.environ.get("LOOPSCOPE_" + f.name.upper())
        if raw is None:
            continue
        try:
            setattr(cfg, f.name, _parse(f.type, raw))
        except ValueError as e:
            print(f"loopscope: ignoring LOOPSCOPE_{f.name.upper()}: {e}", file=sys.stderr)
    for key, value in overrides.items():
        if not hasattr(cfg, key) or key == "extra":
            raise TypeError(f"loopscope.install() got an unknown option {key!r}")
        setattr(cfg, key, value)
    cfg.creation_frames = max(1, int(cfg.creation_frames))
    cfg.max_chain = max(2, int(cfg.max_chain))
    return cfg


def default_socket_dir() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "loopscope")
    return os.path.join("/tmp", f"loopscope-{os.getuid()}")
