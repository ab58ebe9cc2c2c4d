"""Only what pyproject.toml cannot say: the optional compiled hot paths.

``optional=True``: where no C compiler (or no Python headers) is available
the build goes on without it, and the agent uses the Python versions, which
do the same (agent/steps.py, agent/tracker.py).  Not built for a
free-threaded interpreter: the extension relies on the GIL, and importing it
there would turn the GIL back on for the monitored program.
"""

import sysconfig

from setuptools import Extension, setup

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

setup(
    ext_modules=[]
    if FREE_THREADED
    else [
        Extension(
            "loopscope.agent._speedups",
            ["src/loopscope/agent/_speedups.c"],
            optional=True,
        )
    ]
)
