"""Exceptions of the SFTP front end (``p2pstore.sftp``).

- :class:`SftpLocalError`: this machine is at fault (the users file, the host key).
  Its message names the file and line and never holds a cap or a key.
- :class:`SftpRemoteError`: a client sent something unusable (a path that is not
  UTF-8). It fails that one request, never the session or the node.

Operations on the drive fail with the application layer's ``AppError``; the
handler maps both kinds to SFTP status codes (docs/sftp.md, "Errors").
"""

from __future__ import annotations

from pathlib import Path


class SftpError(Exception):
    """Base of every error this package raises on purpose."""


class SftpLocalError(SftpError):
    """A file of this node (users file, host key) is wrong."""


class UsersFileError(SftpLocalError):
    def __init__(self, path: Path, line: int, problem: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = path, line, problem


class SftpRemoteError(SftpError):
    """A client's request is malformed (answered with an error status)."""
