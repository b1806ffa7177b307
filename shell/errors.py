"""The shell's exception base.

:class:`ShellError` is what a command raises to say "this did not work" in one
line; the loop prints ``error: <message>`` and goes on. :class:`UsageError`
(local: the line typed was wrong) and :class:`RemoteError` (the node said no, or
could not be reached) split it the way docs/architecture.md ("Conventions") asks. API failures from
:mod:`p2pstore.api_client` (``ClientError``) are shown the same way without wrapping.
"""

from __future__ import annotations


class ShellError(Exception):
    """A command failed; ``str(e)`` is the one line shown to the user."""


class UsageError(ShellError):
    """The command line is wrong (unknown command, bad option, missing argument);
    ``command`` names the command when known, so the loop can point to its help."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


class RemoteError(ShellError):
    """The node refused or the remote state does not allow it (e.g. not a directory)."""


class Cancelled(ShellError):
    """The user pressed Ctrl-C during a transfer; nothing was kept."""
