"""Start the agent from ``sitecustomize`` in processes ``loopscope run`` starts.

``loopscope run`` puts ``agent/_boot`` first on ``PYTHONPATH``; its
``sitecustomize`` imports this module, which installs the agent and then
runs the program's own ``sitecustomize``, if it has one, so we chain rather
than shadow it.  Child Python processes inherit the environment, so workers
started by uvicorn, gunicorn or multiprocessing are covered as well.
"""

from __future__ import annotations

import importlib
import os
import sys


def autostart() -> None:
    if os.environ.get("LOOPSCOPE_ENABLED", "") not in ("1", "true", "yes"):
        return
    try:
        from .core import install

        install()
    except Exception as e:  # noqa: BLE001 - the program must start regardless
        print(f"loopscope: agent not started: {type(e).__name__}: {e}", file=sys.stderr)


def chain_sitecustomize(boot_dir: str) -> None:
    """Import the next ``sitecustomize`` on sys.path, skipping ours."""
    ours = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != boot_dir]
        try:
            importlib.import_module("sitecustomize")
        except ImportError as e:
            if e.name != "sitecustomize":
                raise
    except Exception as e:  # noqa: BLE001
        print(f"loopscope: the program's sitecustomize failed: {e}", file=sys.stderr)
    finally:
        sys.path[:] = saved
        if ours is not None and "sitecustomize" not in sys.modules:
            sys.modules["sitecustomize"] = ours
