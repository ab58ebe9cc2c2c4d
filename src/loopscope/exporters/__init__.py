"""Optional exporters that run inside the monitored program and use the
ecosystem's own libraries (install the ``prometheus`` / ``otel`` extras).

The agent itself stays standard-library only; these modules are imported
only by programs that ask for them.
"""
