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
__all__ = ["install", "uninstall", "installed", "__version__"]

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
