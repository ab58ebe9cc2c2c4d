"""Shared bits of the scenario programs (imported from the script's directory).

Scenarios are ordinary asyncio programs; the tests start them in their own
process, under ``loopscope run`` or bare.  Two conventions:

* ``ready()`` prints ``READY`` once the state the test looks at is set up;
* ``exit_with_parent()`` ends the program when its stdin closes, so a test
  runner that dies without its fixtures' teardown leaves no orphans behind
  (only when the tests ask for it with SCENARIO_EXIT_WITH_PARENT=1, so the
  scenarios can also be run by hand).
"""

from __future__ import annotations

import os
import threading


def ready(tag: str = "READY") -> None:
    print(tag, flush=True)


def exit_with_parent() -> None:
    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)

    if os.environ.get("SCENARIO_EXIT_WITH_PARENT") == "1":
        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
