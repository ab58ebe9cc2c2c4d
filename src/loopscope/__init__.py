"""loopscope: top, ps, pstree, a flight recorder and a deadlock detector for asyncio.

Inside a program::

    import loopscope
    loopscope.install()          # every event loop in this process is tracked

or without touching the program: ``loopscope run -- python app.py``.
This module stays import-light: it must be cheap to import in production.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["install", "uninstall", "installed", "register_executor", "health", "__version__"]

if TYPE_CHECKING:
    from .agent.core import Agent


def install(loop: Any = None, **options: Any) -> Agent:
    """Start the agent in this process (idempotent).  See ``agent.config``."""
    from .agent.core import install as _install

    return _install(loop, **options)


def uninstall() -> None:
    """Stop the agent and remove all of its hooks."""
    from .agent.core import uninstall as _uninstall

    _uninstall()


@contextlib.contextmanager
def installed(loop: Any = None, **options: Any) -> Iterator[Agent]:
    """``with loopscope.installed(): ...`` — the agent for the block's duration."""
    agent = install(loop, **options)
    try:
        yield agent
    finally:
        uninstall()


def register_executor(executor: Any, name: str | None = None) -> None:
    """Report this executor's saturation (queued / active / max workers) in
    ``health`` and the exporters, next to the loop's default executor.
    Held weakly; a no-op until the agent is installed."""
    from .agent.core import current

    agent = current()
    if agent is not None:
        agent.executors.register(executor, name)


def health(top: int = 10) -> dict[str, Any]:
    """The loop-health report of this process, as ``loopscope health --json``
    shows it (empty ``loops`` when the agent is not installed)."""
    from .agent.core import current
    from .agent.health import health_report

    agent = current()
    if agent is None:
        return {"loops": []}
    return health_report(agent, top)
