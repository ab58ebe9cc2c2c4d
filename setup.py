"""Only what pyproject.toml cannot say: the optional compiled step hook.

``optional=True``: where no C compiler (or no Python headers) is available
the build goes on without it, and the agent uses the Python step hook,
which does the same (agent/steps.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "loopscope.agent._speedups",
            ["src/loopscope/agent/_speedups.c"],
            optional=True,
        )
    ]
)
