"""``make run`` hands the terminal to the shell: Ctrl-C during a shell command reaches
the shell alone, never the demo program (or ``make``) that started it.

Driven in a real pseudo-terminal with pexpect: a parent that uses
``p2pstore.demo.run_in_foreground`` and reports any SIGINT it receives, and a child
that waits for Ctrl-C the way the shell does (it cancels and carries on).
"""

from __future__ import annotations

import io
import sys
import textwrap

import pexpect

PARENT = textwrap.dedent(
    """
    import signal, sys
    from p2pstore.demo import run_in_foreground

    def hit(signum, frame):
        print("PARENT-GOT-SIGINT", flush=True)

    signal.signal(signal.SIGINT, hit)
    child = (
        "import time\\n"
        "try:\\n"
        "    print('CHILD-READY', flush=True)\\n"  # inside: a Ctrl-C right after it is caught
        "    time.sleep(30)\\n"
        "except KeyboardInterrupt:\\n"
        "    print('CHILD-CANCELLED', flush=True)\\n"
        "print('CHILD-GOES-ON', flush=True)\\n"
    )
    rc = run_in_foreground([sys.executable, "-c", child])
    print(f"PARENT-DONE rc={rc}", flush=True)
    """
)


def test_ctrl_c_reaches_the_foreground_child_only() -> None:
    proc = pexpect.spawn(sys.executable, ["-c", PARENT], timeout=20, encoding="utf-8")
    seen = io.StringIO()
    proc.logfile_read = seen
    try:
        proc.expect("CHILD-READY")
        proc.sendintr()  # the terminal's Ctrl-C
        proc.expect("CHILD-CANCELLED")
        proc.expect("CHILD-GOES-ON")
        proc.expect(r"PARENT-DONE rc=0")
        proc.expect(pexpect.EOF)
        assert "PARENT-GOT-SIGINT" not in seen.getvalue()
    finally:
        proc.close(force=True)
