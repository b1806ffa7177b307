"""Exceptions of the node package (``p2pstore.node``): config, node directory,
bootstrap lists, known-peers state and daemon control.

Invariants:
- Every exception raised on purpose by this package derives from :class:`NodeError`
  and its message is fit to print to a user as is: it names the file (and the
  config key or line number) and says what is wrong, never a secret.
- Local/Remote subclasses (docs/architecture.md, "Conventions"). :class:`NodeLocalError` covers
  mistakes on this machine (config, directories, daemon control);
  :class:`NodeRemoteError` covers text that came from somebody else (a bootstrap
  list pasted from a chat, peer addresses fed by the DHT). Neither kind ever
  stops a running node: remote input is reported and skipped.
"""

from __future__ import annotations

from pathlib import Path

#: exit codes of ``p2pstore run`` (the runner's; here so the CLI reads them cheaply)
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG


class NodeError(Exception):
    """Base of every error the node package raises on purpose."""


class NodeLocalError(NodeError):
    """Something on this machine is wrong: a config value, a directory, a pid file."""


class NodeRemoteError(NodeError):
    """Text from someone else (a bootstrap list, a peer address) is malformed."""


class ConfigError(NodeLocalError):
    """A config value is invalid. ``key`` is ``[section] name`` or ``""`` for the file."""

    def __init__(self, file: str | Path, key: str, problem: str) -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        where = f"{self.file}: {key}: " if key else f"{self.file}: "
        super().__init__(where + problem)


class NodeDirError(NodeLocalError):
    """A node directory is missing, incomplete, or would be overwritten."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class SecretFileError(NodeLocalError):
    """A secret file (convergence secret, API token) is unreadable or malformed."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DaemonError(NodeLocalError):
    """Starting, stopping or inspecting the background node failed."""


class BootstrapError(NodeRemoteError):
    """A bootstrap line is malformed. ``line_no`` is 1-based; 0 means the whole text."""

    def __init__(self, source: str, line_no: int, problem: str) -> None:
        self.source = source
        self.line_no = line_no
        self.problem = problem
        where = f"{source}, line {line_no}" if line_no else source
        super().__init__(f"{where}: {problem}")


class BootstrapErrors(NodeRemoteError):
    """Several bad lines in one bootstrap text, each reported with its line number."""

    def __init__(self, errors: list[BootstrapError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class AddressError(NodeRemoteError):
    """A ``host:port`` text is malformed (the caller adds where it came from)."""
