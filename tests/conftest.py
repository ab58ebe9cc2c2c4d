"""Test harness: real programs in their own processes, the real CLI.

Every test gets a ``ls`` harness (see ``Harness``) with its own socket
directory, short enough for AF_UNIX paths, passed to both sides through
LOOPSCOPE_SOCKET_DIR: the agent reads its ``socket_dir`` option from it and
the client looks for sockets there.  Programs started through the harness
are killed when the test ends, whatever happened.

Synchronisation is always a poll with a deadline (``wait_until``) or a line
the program prints (``Program.wait_line``), never a bare sleep.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
PYTHON = sys.executable
PYCACHE_PREFIX = os.path.join(tempfile.gettempdir(), f"loopscope-tests-pycache-{os.getuid()}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "uvloop: needs uvloop installed for the running Python")
    config.addinivalue_line("markers", "slow: takes more than 10 s; deselect with -m 'not slow'")


# -- small helpers ---------------------------------------------------------------


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def scenario_path(name: str) -> Path:
    return SCENARIOS / name


def marker_line(name: str, tag: str) -> int:
    """The line number of ``# LINE:tag`` in a scenario (so tests don't hard-code lines)."""
    wanted = f"# LINE:{tag}"
    hits = [i for i, line in enumerate(scenario_path(name).read_text().splitlines(), 1) if line.rstrip().endswith(wanted)]
    assert len(hits) == 1, f"{name}: expected exactly one {wanted!r}, found {len(hits)}"
    return hits[0]


def where(name: str, tag: str) -> str:
    """``/abs/path/scenario.py:LINE`` as loopscope prints locations."""
    return f"{scenario_path(name)}:{marker_line(name, tag)}"


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of a loopscope text table, split at the header's column starts."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and lines[i + 1].startswith("---") and set(lines[i + 1]) == {"-"}:
            header, body = line, lines[i + 2 :]
            break
    else:
        raise AssertionError(f"no table in:\n{text}")
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]
    names = [header[s:e].strip() for s, e in zip(starts, starts[1:] + [len(header)])]
    rows = []
    for line in body:
        if not line.strip():
            break
        cells = [line[s:e].strip() for s, e in zip(starts, starts[1:] + [max(len(line), len(header))])]
        rows.append(dict(zip(names, cells)))
    return rows


@dataclass
class TreeNode:
    text: str
    depth: int
    children: list[TreeNode]
    parent: TreeNode | None = None

    def find(self, pred: Callable[[TreeNode], bool]) -> list[TreeNode]:
        out = [self] if pred(self) else []
        for c in self.children:
            out.extend(c.find(pred))
        return out


def parse_tree(text: str) -> TreeNode:
    """A pstree rendering ("├── " / "└── " connectors, 4 columns a level) as nodes."""
    root = TreeNode("<root>", -1, [])
    stack = [root]
    for line in text.splitlines():
        m = re.search(r"[├└]── ", line)
        if m is None:
            continue
        depth = m.start() // 4
        node = TreeNode(line[m.end() :], depth, [])
        while stack[-1].depth >= depth:
            stack.pop()
        assert stack[-1].depth == depth - 1, f"bad indentation at {line!r}"
        node.parent = stack[-1]
        stack[-1].children.append(node)
        stack.append(node)
    return root


# -- processes ----------------------------------------------------------------------


class Stream:
    """Collects a pipe's lines from a thread, so tests can wait for a line."""

    def __init__(self, pipe: Any, label: str) -> None:
        self.lines: list[str] = []
        self.label = label
        self._cond = threading.Condition()
        self.closed = False
        self._thread = threading.Thread(target=self._pump, args=(pipe,), name=f"pump-{label}", daemon=True)
        self._thread.start()

    def _pump(self, pipe: Any) -> None:
        try:
            for raw in iter(pipe.readline, b""):
                with self._cond:
                    self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_line(self, pred: str | Callable[[str], bool], timeout: float = 10.0, start: int = 0) -> str:
        """The first line (from index ``start``) equal to ``pred`` or satisfying it."""
        test = (lambda s: s == pred) if isinstance(pred, str) else pred
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if test(line):
                        return line
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    state = "closed" if self.closed else "open"
                    raise AssertionError(f"{self.label}: no line matching {pred!r} within {timeout} s (stream {state}); got:\n" + "\n".join(self.lines[-40:]))
                self._cond.wait(left)

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


class Program:
    """A scenario running in its own process (under the agent or bare)."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str, sockdir: str) -> None:
        self.popen = popen
        self.name = name
        self.sockdir = sockdir
        self.pid = popen.pid  # ``loopscope run`` execs the program: same pid
        self.stdout = Stream(popen.stdout, f"{name} stdout")
        self.stderr = Stream(popen.stderr, f"{name} stderr")

    @property
    def socket(self) -> str:
        return os.path.join(self.sockdir, f"{self.pid}.sock")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_line(self, pred: str | Callable[[str], bool] = "READY", timeout: float = 15.0) -> str:
        return self.stdout.wait_line(pred, timeout)

    def wait_agent(self, timeout: float = 10.0) -> dict[str, Any]:
        """Poll until the socket exists and ``hello`` answers."""
        from loopscope.client.connection import Connection
        from loopscope.client.errors import ClientError

        def answered() -> dict[str, Any] | None:
            if not self.alive():
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}; stderr:\n{self.stderr.text}")
            if not os.path.exists(self.socket):
                return None
            try:
                with Connection(self.socket, self.pid, timeout=5) as conn:
                    return conn.hello()
            except ClientError:
                return None

        return wait_until(answered, timeout, what=f"the agent of {self.name} to answer hello")

    def connect(self, timeout: float = 10.0) -> Any:
        from loopscope.client.connection import Connection

        return Connection(self.socket, self.pid, timeout=timeout)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self.connect() as conn:
            return conn.call(method, params)

    def wait_exit(self, timeout: float = 30.0) -> int:
        rc = self.popen.wait(timeout)
        self.stdout.join()
        self.stderr.join()
        return rc

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
            pass
        for pipe in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


@dataclass
class Result:
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"rc={self.rc} ({self.seconds:.2f} s)\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Harness:
    """One test's world: a private socket directory, its programs, the CLI."""

    def __init__(self) -> None:
        # AF_UNIX paths must stay under 108 bytes: pytest's tmp_path is too long.
        self.base = tempfile.mkdtemp(prefix="ls", dir="/tmp")
        # The agent creates the socket directory itself (so its mode is its doing).
        self.sockdir = os.path.join(self.base, "s")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSCOPE_")}
        self.env.update(
            LOOPSCOPE_SOCKET_DIR=self.sockdir,
            PYTHONUNBUFFERED="1",
            SCENARIO_EXIT_WITH_PARENT="1",
            # Every test starts many interpreters: let them cache bytecode,
            # but in a tree of their own, never next to sources or the stdlib.
            PYTHONPYCACHEPREFIX=PYCACHE_PREFIX,
        )
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env.pop("PYTHONASYNCIODEBUG", None)
        self.programs: list[Program] = []

    def path(self, name: str) -> str:
        return os.path.join(self.base, name)

    def start(self, scenario: str, *args: str, agent: bool = True, run_opts: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Program:
        script = str(scenario_path(scenario))
        if agent:
            cmd = [PYTHON, "-m", "loopscope", "run", *run_opts, "--", PYTHON, script, *args]
        else:
            cmd = [PYTHON, script, *args]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**self.env, **(env or {})},
            cwd=self.base,
        )
        prog = Program(proc, scenario, self.sockdir)
        self.programs.append(prog)
        return prog

    def start_ready(self, scenario: str, *args: str, timeout: float = 15.0, **kw: Any) -> Program:
        """Start under the agent, wait for READY and for ``hello`` to answer."""
        prog = self.start(scenario, *args, **kw)
        prog.wait_line("READY", timeout)
        prog.wait_agent()
        return prog

    def cli(self, *args: str | int | os.PathLike[str], timeout: float = 60.0, env: dict[str, str] | None = None) -> Result:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [PYTHON, "-m", "loopscope", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
            cwd=self.base,
            stdin=subprocess.DEVNULL,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)

    def ok(self, *args: str | int | os.PathLike[str], **kw: Any) -> Result:
        res = self.cli(*args, **kw)
        assert res.rc == 0, f"loopscope {' '.join(map(str, args))} failed:\n{res}"
        assert "Traceback" not in res.err, str(res)
        return res

    def close(self) -> None:
        for prog in self.programs:
            prog.kill()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def ls() -> Any:
    h = Harness()
    try:
        yield h
    finally:
        h.close()


def assert_clean_error(res: Result, *expected: str) -> None:
    """Exit code 2, one line on stderr starting 'loopscope: ', nothing else."""
    assert res.rc == 2, str(res)
    assert "Traceback" not in res.err, str(res)
    assert res.out == "", str(res)
    assert len(res.err_lines) == 1, f"expected one line on stderr:\n{res}"
    assert res.err_lines[0].startswith("loopscope: "), str(res)
    for text in expected:
        assert text in res.err_lines[0], f"{text!r} not in {res.err_lines[0]!r}"


def raw_exchange(path: str, payload: bytes, expect: int | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Send raw bytes to an agent socket; return the answer lines, until EOF
    or until ``expect`` answers (default: one per non-blank request line)."""
    want = expect if expect is not None else max(1, sum(1 for line in payload.split(b"\n") if line.strip()))
    answers: list[dict[str, Any]] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(payload)
        buf = b""
        while len(answers) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                answers.append(json.loads(line))
    return answers


def uvloop_or_skip() -> Any:
    try:
        import uvloop
    except ImportError:
        pytest.skip("uvloop is not installed for this Python")
    return uvloop
