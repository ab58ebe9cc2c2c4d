"""The compiled hot paths (``_speedups.c``), loaded once for every module
of the agent that has a compiled version of itself."""

from __future__ import annotations

import sys
from typing import Any


def load_speedups() -> Any:
    """The compiled hot paths (agent/_speedups.c), or None: not built (no
    compiler at install time), or an interpreter running without the GIL.
    There, importing an extension that does not declare itself safe without
    the GIL turns the GIL back on for the whole program, and ours relies on
    it: the Python versions run instead."""
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if is_gil_enabled is not None and not is_gil_enabled():
        return None
    try:
        from . import _speedups as module
    except ImportError:
        return None
    return module


speedups = load_speedups()
