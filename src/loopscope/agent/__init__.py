"""Everything in this package runs inside the monitored process.

Standard library only, never raises into the host, bounded memory.  The rest
of loopscope (``client``, ``cli``, ``tui``) runs outside the process.
"""
