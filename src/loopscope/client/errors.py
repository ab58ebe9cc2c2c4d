"""The one error type the CLI turns into a single clear line and exit code."""

from __future__ import annotations


class ClientError(Exception):
    """Something the user can act on: wrong pid, no agent, bad dump file…"""

    exit_code = 2
