"""Only what pyproject.toml cannot say: the optional compiled hot paths.

``optional=True``: where no C compiler (or no Python headers) is available
the build goes on without it, and the agent uses the Python versions, which
do the same (agent/steps.py, agent/tracker.py).  Not built for a
free-threaded interpreter: the extension relies on the GIL, and importing it
there would turn the GIL back on for the monitored program.

An optimisation level is added when ``$CFLAGS`` names none: setuptools uses
``$CFLAGS`` *instead of* the flags Python was built with (``-O3`` or ``-O2``
among them), so ``CFLAGS=-I/some/include pip install loopscope`` would
otherwise build the hot paths at ``-O0``, several times slower.  A
``$CFLAGS`` that does name a level (``-O0`` to debug) is left alone.

``-fno-plt`` on Linux: the hot paths call some fifty of libpython's
functions, each through a PLT stub of their own in the extension; a server
request goes through most of them once, so the stubs' lines are fetched
anew every request.  Calling through the GOT instead measured about 100
instruction-cache misses fewer per aiohttp request, of ~7,200
(BENCHMARKS.md, seventeenth session).
"""

import os
import sys
import sysconfig

from setuptools import Extension, setup

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def optimisation_args() -> list[str]:
    env = os.environ.get("CFLAGS")
    args = ["-fno-plt"] if sys.platform.startswith("linux") else []
    if os.name != "posix" or env is None or any(flag.startswith("-O") for flag in env.split()):
        return args
    return ["-O2", *args]


setup(
    ext_modules=[]
    if FREE_THREADED
    else [
        Extension(
            "loopscope.agent._speedups",
            ["src/loopscope/agent/_speedups.c"],
            extra_compile_args=optimisation_args(),
            optional=True,
        )
    ]
)
