"""In-process test helpers shared by the test suites (no sockets, no subprocesses)."""
