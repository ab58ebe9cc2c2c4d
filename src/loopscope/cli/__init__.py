"""The ``loopscope`` command (runs outside the monitored process)."""
