"""Loaded by every Python process started under ``loopscope run``.

The directory holding this file is the only thing ``loopscope run`` adds to
PYTHONPATH.  The loopscope package itself is found through
LOOPSCOPE_PACKAGE_DIR, so the program does not see our site-packages (and
our dependencies) on its path.
"""


def _start() -> None:
    import importlib.util
    import os
    import sys

    boot_dir = os.path.dirname(os.path.abspath(__file__))
    if "loopscope" not in sys.modules:
        pkg = os.environ.get("LOOPSCOPE_PACKAGE_DIR", "")
        init = os.path.join(pkg, "__init__.py")
        if pkg and os.path.exists(init):
            spec = importlib.util.spec_from_file_location("loopscope", init, submodule_search_locations=[pkg])
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                sys.modules["loopscope"] = module
                spec.loader.exec_module(module)
    try:
        from loopscope.agent import bootstrap
    except Exception as e:  # noqa: BLE001
        print(f"loopscope: cannot import the agent: {e}", file=sys.stderr)
        return
    bootstrap.autostart()
    bootstrap.chain_sitecustomize(boot_dir)


_start()
del _start
