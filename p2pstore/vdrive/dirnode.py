"""Directory objects: the bytes of one vdrive directory, and directory caps. Sans-I/O.

A directory is an immutable object stored in the grid like any file (so it gets the
same encryption, erasure coding and integrity); a *directory cap* is the read cap
of that object, tagged so it is not mistaken for a file cap:

    p2ps:dir:chk:<k>:<N>:<size>:<key>:<ext hash>     (the object's read cap, "p2ps:" -> "p2ps:dir:")
    p2ps:dir:lit:<data>:<check>                      (a directory small enough to be literal)

Encoding (version 1, CBOR; docs/vdrive.md "Directory objects")::

    {"p2ps-dir": 1, "entries": [[name, kind, cap, size, ctime, mtime(, meta)], ...]}

``meta`` (optional, absent unless set) is ``{"mode": permission bits}``: what a
backup snapshot records so a restore can give files their modes back.

Invariants enforced by :func:`decode_directory` (and so by every reader, whatever
produced the bytes) and by :class:`Directory`'s constructors:

- entries are sorted by the UTF-8 bytes of their names, strictly (no duplicates);
- names are NFC, 1..255 UTF-8 bytes, no ``/``, NUL or control characters, not
  ``.``/``..``;
- ``kind`` is ``"file"`` (cap: a chk read cap or a literal cap, ``size`` = the
  cap's size; or a mutable file's read cap, ``size`` null) or ``"dir"`` (cap: a
  directory cap, or a live directory's read cap, ``size`` null). Write caps of
  mutable files are never held: whoever reads a directory reads its entries, so a
  write cap there would hand out write access (docs/mutable.md, "Linking");
- times are finite non-negative Unix seconds below 2^40;
- at most :data:`MAX_ENTRIES` entries and :data:`MAX_DIR_BYTES` encoded bytes.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import cbor2

from p2pstore.immutable import CapError, LiteralCap, ReadCap, parse_cap
from p2pstore.mutable import MutableCapError, is_mutable_cap, parse_mutable_cap
from p2pstore.mutable import ReadCap as MutableReadCap

from .errors import VdriveLocalError, VdriveRemoteError

FORMAT_KEY: Final = "p2ps-dir"
FORMAT_VERSION: Final = 1
MAX_ENTRIES: Final = 100_000
MAX_DIR_BYTES: Final = 32 * 1024 * 1024
MAX_NAME_BYTES: Final = 255
MAX_TIME: Final = float(2**40)
MAX_MODE: Final = 0o7777
DIRCAP_PREFIX: Final = "p2ps:dir:"

Kind = Literal["file", "dir"]


@dataclass(frozen=True, slots=True)
class DirCap:
    """Read-only cap of one directory object (a snapshot: it never changes)."""

    inner: ReadCap | LiteralCap

    def to_string(self) -> str:
        return DIRCAP_PREFIX + self.inner.to_string()[len("p2ps:") :]

    def __repr__(self) -> str:  # never the key
        if isinstance(self.inner, ReadCap):
            return f"DirCap(si={self.inner.storage_index.hex()[:12]})"
        return "DirCap(literal)"


def parse_dircap(text: str) -> DirCap:
    """Parse ``p2ps:dir:...``; raises :class:`CapError` naming what is wrong."""
    if not isinstance(text, str) or not text.startswith(DIRCAP_PREFIX):
        raise CapError("prefix", "a directory cap starts with p2ps:dir:")
    inner = parse_cap("p2ps:" + text[len(DIRCAP_PREFIX) :])
    if not isinstance(inner, ReadCap | LiteralCap):
        raise CapError("kind", "a directory cap holds a read or literal cap")
    return DirCap(inner)


FileCap = ReadCap | LiteralCap


def check_name(name: Any) -> str:
    """Return ``name`` if it is a valid entry name (NFC already), else raise bad-path."""
    if not isinstance(name, str) or not name:
        raise VdriveLocalError("bad-path", "an entry name must be a non-empty string")
    if name in (".", ".."):
        raise VdriveLocalError("bad-path", f"the name {name!r} is not allowed")
    if "/" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise VdriveLocalError(
            "bad-path", f"a name cannot contain '/' or control characters: {name!r}"
        )
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise VdriveLocalError("bad-path", "a name must be valid Unicode text") from None
    if len(raw) > MAX_NAME_BYTES:
        raise VdriveLocalError("bad-path", f"a name is longer than {MAX_NAME_BYTES} bytes")
    if unicodedata.normalize("NFC", name) != name:
        raise VdriveLocalError("bad-path", f"a name must be in Unicode NFC form: {name!r}")
    return name


def normalize_name(name: str) -> str:
    """NFC-normalize then validate (what every operation does with a user's name)."""
    if not isinstance(name, str):
        raise VdriveLocalError("bad-path", "an entry name must be a string")
    try:
        return check_name(unicodedata.normalize("NFC", name))
    except UnicodeError:  # lone surrogates
        raise VdriveLocalError("bad-path", "a name must be valid Unicode text") from None


def _check_time(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise ValueError("time must be a number")
    f = float(t)
    if not math.isfinite(f) or not 0.0 <= f < MAX_TIME:
        raise ValueError("time out of range")
    return f


@dataclass(frozen=True, slots=True)
class Entry:
    kind: Kind
    cap: FileCap | DirCap | MutableReadCap
    size: int | None
    ctime: float
    mtime: float
    mode: int | None = None  # permission bits (backup snapshots); None: not recorded

    def __post_init__(self) -> None:
        if isinstance(self.cap, MutableReadCap):  # a linked mutable file / live directory
            if self.kind != ("dir" if self.cap.directory else "file") or self.size is not None:
                raise ValueError("a mutable entry's kind must be its cap's, with no size")
        elif self.kind == "file":
            if not isinstance(self.cap, ReadCap | LiteralCap):
                raise ValueError("a file entry needs a file cap")
            if self.size != self.cap.size:
                raise ValueError("a file entry's size must be its cap's size")
        elif self.kind == "dir":
            if not isinstance(self.cap, DirCap) or self.size is not None:
                raise ValueError("a dir entry needs a directory cap and no size")
        else:
            raise ValueError("kind must be 'file' or 'dir'")
        _check_time(self.ctime)
        _check_time(self.mtime)
        if self.mode is not None and (
            isinstance(self.mode, bool)
            or not isinstance(self.mode, int)
            or not 0 <= self.mode <= MAX_MODE
        ):
            raise ValueError(f"mode must be permission bits 0..{MAX_MODE:o} (octal)")

    @classmethod
    def file(cls, cap: FileCap, now: float) -> Entry:
        return cls("file", cap, cap.size, now, now)

    @classmethod
    def directory(cls, cap: DirCap, now: float, ctime: float | None = None) -> Entry:
        return cls("dir", cap, None, now if ctime is None else ctime, now)

    def __repr__(self) -> str:
        return f"Entry({self.kind}, size={self.size})"


def _sort_key(name: str) -> bytes:
    return name.encode("utf-8")


class Directory(Mapping[str, Entry]):
    """An immutable name -> :class:`Entry` mapping; the changers return new objects."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, Entry] | None = None) -> None:
        items = dict(entries or {})
        if len(items) > MAX_ENTRIES:
            raise VdriveLocalError("too-large", f"a directory holds at most {MAX_ENTRIES} entries")
        for name in items:
            check_name(name)
        self._entries = items

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries, key=_sort_key))

    def __len__(self) -> int:
        return len(self._entries)

    def with_entry(self, name: str, entry: Entry) -> Directory:
        d = dict(self._entries)
        d[name] = entry
        return Directory(d)

    def without(self, name: str) -> Directory:
        d = dict(self._entries)
        del d[name]
        return Directory(d)

    def encode(self) -> bytes:
        return encode_directory(self)

    def __repr__(self) -> str:
        return f"Directory({len(self)} entries)"


def encode_directory(d: Directory) -> bytes:
    rows = []
    for name in d:
        e = d[name]
        row: list[Any] = [name, e.kind, e.cap.to_string(), e.size, e.ctime, e.mtime]
        if e.mode is not None:
            row.append({"mode": e.mode})
        rows.append(row)
    data: bytes = cbor2.dumps({FORMAT_KEY: FORMAT_VERSION, "entries": rows})
    if len(data) > MAX_DIR_BYTES:
        raise VdriveLocalError("too-large", f"a directory encodes to at most {MAX_DIR_BYTES} bytes")
    return data


def _bad(msg: str) -> VdriveRemoteError:
    return VdriveRemoteError("bad-directory", f"malformed directory object: {msg}")


def _meta_mode(meta: Any, i: int) -> int:
    """The optional 7th field: exactly ``{"mode": int}`` (the range is checked by
    :class:`Entry`)."""
    if not isinstance(meta, dict) or set(meta) != {"mode"}:
        raise _bad(f"entry {i}: meta must be a map with the one key mode")
    mode = meta["mode"]
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise _bad(f"entry {i}: mode must be an integer")
    return mode


def decode_directory(data: bytes) -> Directory:
    """Parse and fully validate a directory object; raises ``bad-directory``."""
    if not isinstance(data, bytes) or len(data) > MAX_DIR_BYTES:
        raise _bad("too large")
    try:
        obj = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types on garbage
        raise _bad(f"not CBOR ({type(e).__name__})") from None
    # cbor2.loads ignores trailing bytes: the canonical re-encoding
    # check below catches them, along with any non-canonical form.
    if not isinstance(obj, dict) or set(obj) != {FORMAT_KEY, "entries"}:
        raise _bad("expected a map with keys p2ps-dir, entries")
    if obj[FORMAT_KEY] != FORMAT_VERSION or isinstance(obj[FORMAT_KEY], bool):
        raise _bad(f"unknown version {obj[FORMAT_KEY]!r}")
    rows = obj["entries"]
    if not isinstance(rows, list) or len(rows) > MAX_ENTRIES:
        raise _bad(f"entries must be a list of at most {MAX_ENTRIES}")
    entries: dict[str, Entry] = {}
    prev: bytes | None = None
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) not in (6, 7):
            raise _bad(f"entry {i}: expected 6 or 7 fields")
        name, kind, cap_text, size, ctime, mtime = row[:6]
        mode = _meta_mode(row[6], i) if len(row) == 7 else None
        try:
            check_name(name)
        except VdriveLocalError as e:
            raise _bad(f"entry {i}: {e.message}") from None
        key = _sort_key(name)
        if prev is not None and key <= prev:
            raise _bad(f"entry {i}: names not strictly sorted")
        prev = key
        if not isinstance(cap_text, str) or len(cap_text) > 512:
            raise _bad(f"entry {i}: cap must be a short string")
        try:
            cap: FileCap | DirCap | MutableReadCap
            if is_mutable_cap(cap_text):
                mcap = parse_mutable_cap(cap_text)
                if not isinstance(mcap, MutableReadCap):
                    raise CapError("kind", "a mutable entry holds a read cap")
                cap = mcap
            elif kind == "dir":
                cap = parse_dircap(cap_text)
            elif kind == "file":
                parsed = parse_cap(cap_text)
                if not isinstance(parsed, ReadCap | LiteralCap):
                    raise CapError("kind", "a file entry holds a read or literal cap")
                cap = parsed
            else:
                raise _bad(f"entry {i}: unknown kind")
            entries[name] = Entry(kind, cap, size, ctime, mtime, mode)
        except (CapError, MutableCapError, ValueError) as e:
            raise _bad(f"entry {i}: {e}") from None
    d = Directory(entries)
    if encode_directory(d) != data:
        raise _bad("not in canonical form")
    return d


EMPTY_DIRECTORY = Directory()
