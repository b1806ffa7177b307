"""Reading one table of the node config: every problem becomes a
:class:`~.errors.ConfigError` naming the file and the key (``[section] name``).
Used by ``config.py`` and the section modules next to it (``sftp_config.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from quic_transport.identity import IdentityError, NodeId

from .errors import AddressError, ConfigError

T = TypeVar("T")


class Section:
    """Reads one table, turning every problem into a ConfigError naming file and key."""

    def __init__(self, file: Path, name: str, table: Mapping[str, Any]) -> None:
        self.file, self.name, self.table = file, name, table
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.file, f"[{self.name}] {key}", problem)

    def get(self, key: str, kind: type[T], default: T) -> T:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if kind is int and isinstance(value, bool):
            raise self.error(key, f"expected an integer, got {value!r}")
        if not isinstance(value, kind):
            names = {str: "a string", int: "an integer", bool: "true or false"}
            raise self.error(key, f"expected {names.get(kind, kind.__name__)}, got {value!r}")
        return value

    def convert(self, key: str, default: T, parse: Callable[[Any], T]) -> T:
        self.used.add(key)
        if key not in self.table:
            return default
        try:
            return parse(self.table[key])
        except (ValueError, AddressError) as e:
            raise self.error(key, str(e)) from None

    def int_range(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.get(key, int, default)
        if not lo <= value <= hi:
            raise self.error(key, f"{value} is out of range {lo}..{hi}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise self.error(unknown[0], f"unknown key (known keys in [{self.name}]: {known})")


def node_ids(value: Any, *, also: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """A list of node IDs (base32) made canonical; the words in ``also`` pass as they
    are (``[helper] helpers = ["seeds"]``)."""
    if not isinstance(value, list) or len(value) > 10_000:
        raise ValueError("expected a list of node IDs (base32 strings)")
    out = []
    for v in value:
        if not isinstance(v, str):
            raise ValueError(f"expected a node ID string, got {v!r}")
        if v.strip() in also:
            out.append(v.strip())
            continue
        try:
            out.append(NodeId.from_b32(v.strip().lower()).b32)
        except IdentityError as e:
            raise ValueError(f"{v!r}: {e}") from None
    return tuple(out)
