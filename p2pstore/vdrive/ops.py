"""Namespace changes and their copy-on-write application to a directory tree.

An operation (:class:`Mkdir`, :class:`Link`, :class:`Unlink`, :class:`Rename`) names
paths inside one drive as tuples of entry names. :func:`apply_op` loads only the
directories on the paths it touches (through an :class:`~.objects.ObjectStore`),
edits them in memory, then writes new immutable objects for exactly the edited
directories and their ancestors, deepest first, ending with a new root. Everything
else in the tree is shared with the previous version by cap. So a change costs in
proportion to the path length (times the sizes of the directories on it), never the
size of the namespace.

Invariants:
- a failed operation writes nothing (all checks happen before the first ``put``,
  and nothing is published unless :func:`apply_op` returns);
- a no-op (``mkdir -p`` of an existing directory, renaming a name to itself)
  returns ``None``: nothing to publish, the drive's sequence does not move;
- a directory never ends up inside itself (rename into a descendant is refused).

The error semantics are those of docs/http-api.md ("vdrive"), shared with
``p2pstore.testing.memory_vdrive``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from p2pstore.immutable import CapError, LiteralCap, ReadCap, parse_cap
from p2pstore.mutable import MutableCapError, is_mutable_cap, parse_mutable_cap
from p2pstore.mutable import ReadCap as MutableReadCap

from .dirnode import (
    EMPTY_DIRECTORY,
    MAX_DIR_BYTES,
    DirCap,
    Directory,
    Entry,
    FileCap,
    decode_directory,
    normalize_name,
    parse_dircap,
)
from .errors import VdriveLocalError, VdriveRemoteError
from .objects import ObjectStore

Path = tuple[str, ...]
MAX_DEPTH = 64
EMPTY_DIRCAP = DirCap(LiteralCap(EMPTY_DIRECTORY.encode()))


def show(path: Path) -> str:
    return "/" + "/".join(path)


@dataclass(frozen=True, slots=True)
class Mkdir:
    path: Path
    parents: bool = False


#: the latest root of a live directory linked into a directory (``Vdrive.open_live``)
OpenLive = Callable[[MutableReadCap], Awaitable[DirCap]]


@dataclass(frozen=True, slots=True)
class Link:
    path: Path
    cap: FileCap | DirCap | MutableReadCap
    replace: bool = False

    def __repr__(self) -> str:
        return f"Link({show(self.path)}, replace={self.replace})"


@dataclass(frozen=True, slots=True)
class Unlink:
    path: Path
    recursive: bool = False


@dataclass(frozen=True, slots=True)
class Rename:
    src: Path
    dst: Path
    replace: bool = False


Op = Mkdir | Link | Unlink | Rename


# ---- wire form (the body of vdrive.apply, docs/vdrive.md) ---------------------------
def _path_wire(p: Path) -> list[str]:
    return list(p)


def _path_from(obj: Any) -> Path:
    if not isinstance(obj, list) or len(obj) > MAX_DEPTH:
        raise VdriveLocalError("bad-path", f"a path is a list of at most {MAX_DEPTH} names")
    return tuple(normalize_name(n) for n in obj)


def op_to_wire(op: Op) -> dict[str, Any]:
    if isinstance(op, Mkdir):
        return {"op": "mkdir", "path": _path_wire(op.path), "parents": op.parents}
    if isinstance(op, Link):
        return {
            "op": "link",
            "path": _path_wire(op.path),
            "cap": op.cap.to_string(),
            "replace": op.replace,
        }
    if isinstance(op, Unlink):
        return {"op": "unlink", "path": _path_wire(op.path), "recursive": op.recursive}
    return {
        "op": "rename",
        "src": _path_wire(op.src),
        "dst": _path_wire(op.dst),
        "replace": op.replace,
    }


_KEYS = {
    "mkdir": {"op", "path", "parents"},
    "link": {"op", "path", "cap", "replace"},
    "unlink": {"op", "path", "recursive"},
    "rename": {"op", "src", "dst", "replace"},
}


def _flag(obj: dict[str, Any], key: str) -> bool:
    v = obj[key]
    if not isinstance(v, bool):
        raise VdriveLocalError("bad-request", f"{key} must be a boolean")
    return v


def parse_cap_any(text: Any) -> FileCap | DirCap | MutableReadCap:
    if not isinstance(text, str) or len(text) > 512:
        raise VdriveLocalError("bad-request", "cap must be a short string")
    if is_mutable_cap(text):
        try:
            mcap = parse_mutable_cap(text)
        except MutableCapError as e:
            raise VdriveLocalError("bad-request", f"bad cap: {e.field}") from None
        if not isinstance(mcap, MutableReadCap):
            raise VdriveLocalError(
                "bad-request", "only the read cap of a mutable file or live directory is linked"
            )
        return mcap
    try:
        if text.startswith("p2ps:dir:"):
            return parse_dircap(text)
        cap = parse_cap(text)
    except CapError as e:
        raise VdriveLocalError("bad-request", f"bad cap: {e.field}") from None
    if not isinstance(cap, ReadCap | LiteralCap):
        raise VdriveLocalError("bad-request", "only read, literal and directory caps can be linked")
    return cap


def op_from_wire(obj: Any) -> Op:
    """Validate a wire op (names NFC-normalized); raises bad-request / bad-path."""
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str) or obj["op"] not in _KEYS:
        raise VdriveLocalError("bad-request", "unknown operation")
    kind = obj["op"]
    if set(obj) != _KEYS[kind]:
        raise VdriveLocalError("bad-request", f"{kind}: expected keys {sorted(_KEYS[kind])}")
    if kind == "mkdir":
        return Mkdir(_path_from(obj["path"]), _flag(obj, "parents"))
    if kind == "link":
        return Link(_path_from(obj["path"]), parse_cap_any(obj["cap"]), _flag(obj, "replace"))
    if kind == "unlink":
        return Unlink(_path_from(obj["path"]), _flag(obj, "recursive"))
    return Rename(_path_from(obj["src"]), _path_from(obj["dst"]), _flag(obj, "replace"))


# ---- reading --------------------------------------------------------------------------
async def load_dir(store: ObjectStore, cap: DirCap) -> Directory:
    """The directory under ``cap``, decoded and validated (reusing a decoded copy when
    the store keeps them: ``CachingStore.directories``; safe since caps are immutable)."""
    cache = getattr(store, "directories", None)
    key = cap.to_string()
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return cast(Directory, hit)
    if cap.inner.size > MAX_DIR_BYTES:  # never fetch what could not be a directory
        raise VdriveRemoteError("bad-directory", "a directory cap names an object too large")
    d = decode_directory(await store.get(cap.inner))
    if cache is not None:
        cache.put(key, d)
    return d


async def _dir_cap(entry: Entry, open_live: OpenLive | None, where: Path) -> DirCap:
    """The directory object an entry of kind dir names now: its own cap, or the latest
    root of a linked live directory."""
    if isinstance(entry.cap, DirCap):
        return entry.cap
    if isinstance(entry.cap, MutableReadCap) and entry.cap.directory:
        if open_live is None:
            raise VdriveLocalError(
                "vdrive-unavailable", f"{show(where)} is a live directory; this node cannot open it"
            )
        return await open_live(entry.cap)
    raise VdriveLocalError("not-a-directory", f"{show(where)} is a file, not a directory")


async def resolve(
    store: ObjectStore, root: DirCap | None, path: Path, open_live: OpenLive | None = None
) -> Entry | None:
    """The entry at ``path`` (None for the root itself); not-found / not-a-directory.
    A linked live directory on the way is entered at its latest version."""
    cap = root or EMPTY_DIRCAP
    entry: Entry | None = None
    for i, name in enumerate(path):
        if entry is not None:
            cap = await _dir_cap(entry, open_live, path[:i])
        d = await load_dir(store, cap)
        entry = d.get(name)
        if entry is None:
            raise VdriveLocalError("not-found", f"no such file or directory: {show(path[: i + 1])}")
    return entry


async def list_dir(
    store: ObjectStore, root: DirCap | None, path: Path, open_live: OpenLive | None = None
) -> Directory:
    entry = await resolve(store, root, path, open_live)
    if entry is None:
        return await load_dir(store, root or EMPTY_DIRCAP)
    return await load_dir(store, await _dir_cap(entry, open_live, path))


# ---- copy-on-write editing ----------------------------------------------------------
class TreeEditor:
    """Directories on touched paths, loaded once, edited in memory, then committed."""

    def __init__(self, store: ObjectStore, root: DirCap | None, now: float) -> None:
        self.store = store
        self.root = root or EMPTY_DIRCAP
        self.now = now
        self.dirs: dict[Path, Directory] = {}
        self.dirty: set[Path] = set()
        self.loaded = 0
        self.written = 0

    async def dir(self, path: Path) -> Directory:
        """The directory at ``path`` (as edited so far)."""
        if path in self.dirs:
            return self.dirs[path]
        if not path:
            d = await load_dir(self.store, self.root)
        else:
            parent = await self.dir(path[:-1])
            e = parent.get(path[-1])
            if e is None:
                raise VdriveLocalError("not-found", f"no such directory: {show(path)}")
            if isinstance(e.cap, MutableReadCap) and e.cap.directory:
                raise VdriveLocalError(
                    "refused",
                    f"{show(path)} is a live directory linked here by its read cap: it is "
                    "changed through its write cap (CAP/path), not through this drive",
                )
            if not isinstance(e.cap, DirCap):
                raise VdriveLocalError(
                    "not-a-directory", f"{show(path)} is a file, not a directory"
                )
            d = await load_dir(self.store, e.cap)
        self.loaded += 1
        self.dirs[path] = d
        return d

    def set(self, path: Path, d: Directory) -> None:
        self.dirs[path] = d
        for i in range(len(path) + 1):
            self.dirty.add(path[:i])

    async def commit(self) -> DirCap | None:
        if not self.dirty:
            return None
        for path in sorted(self.dirty, key=len, reverse=True):
            cap = DirCap(await self.store.put(self.dirs[path].encode()))
            self.written += 1
            if not path:
                return cap
            parent = self.dirs[path[:-1]]
            old = parent.get(path[-1])
            ctime = old.ctime if old is not None else self.now
            self.dirs[path[:-1]] = parent.with_entry(
                path[-1], Entry.directory(cap, self.now, ctime)
            )
        raise AssertionError("the root is always dirty when anything is")  # pragma: no cover


async def _mkdir(ed: TreeEditor, op: Mkdir) -> None:
    path = op.path
    if not path:
        if op.parents:
            return
        raise VdriveLocalError("exists", "/ already exists")
    for i in range(len(path)):
        d = await ed.dir(path[:i])
        e = d.get(path[i])
        if e is None:
            if not op.parents and i < len(path) - 1:
                raise VdriveLocalError("not-found", f"no such directory: {show(path[: i + 1])}")
            for j in range(i, len(path)):
                parent = await ed.dir(path[:j])
                ed.set(path[:j], parent.with_entry(path[j], Entry.directory(EMPTY_DIRCAP, ed.now)))
                ed.set(path[: j + 1], EMPTY_DIRECTORY)
            return
        if e.kind != "dir":
            raise VdriveLocalError(
                "not-a-directory", f"{show(path[: i + 1])} is a file, not a directory"
            )
    if not op.parents:
        raise VdriveLocalError("exists", f"{show(path)} already exists")


async def _link(ed: TreeEditor, op: Link) -> None:
    if not op.path:
        raise VdriveLocalError("bad-path", "cannot link at the root itself; name it")
    parent_path, name = op.path[:-1], op.path[-1]
    parent = await ed.dir(parent_path)
    old = parent.get(name)
    if old is not None and old.kind == "dir":
        raise VdriveLocalError("is-a-directory", f"{show(op.path)} is a directory")
    if old is not None and not op.replace:
        raise VdriveLocalError("exists", f"{show(op.path)} already exists (replace it explicitly)")
    if isinstance(op.cap, MutableReadCap):  # a mutable file or a live directory
        if op.cap.directory and old is not None:
            raise VdriveLocalError("exists", f"{show(op.path)} already exists")
        entry = Entry("dir" if op.cap.directory else "file", op.cap, None, ed.now, ed.now)
    elif isinstance(op.cap, DirCap):
        if old is not None:
            raise VdriveLocalError("exists", f"{show(op.path)} already exists")
        entry = Entry.directory(op.cap, ed.now)
    else:
        entry = Entry.file(op.cap, ed.now)
    ed.set(parent_path, parent.with_entry(name, entry))


async def _unlink(ed: TreeEditor, op: Unlink) -> None:
    if not op.path:
        raise VdriveLocalError("bad-path", "cannot remove the root of a drive")
    parent_path, name = op.path[:-1], op.path[-1]
    parent = await ed.dir(parent_path)
    e = parent.get(name)
    if e is None:
        raise VdriveLocalError("not-found", f"no such file or directory: {show(op.path)}")
    if isinstance(e.cap, DirCap) and not op.recursive and len(await ed.dir(op.path)):
        raise VdriveLocalError(
            "directory-not-empty",
            f"directory {show(op.path)} is not empty (remove it with everything inside: rm -r)",
        )
    ed.set(parent_path, parent.without(name))


async def _rename(ed: TreeEditor, op: Rename) -> None:
    src, dst = op.src, op.dst
    if not src or not dst:
        raise VdriveLocalError("bad-path", "cannot move the root of a drive")
    if dst[: len(src)] == src and dst != src:
        raise VdriveLocalError("bad-path", f"cannot move {show(src)} into itself")
    src_parent = await ed.dir(src[:-1])
    node = src_parent.get(src[-1])
    if node is None:
        raise VdriveLocalError("not-found", f"no such file or directory: {show(src)}")
    if dst == src:
        return
    dst_parent = await ed.dir(dst[:-1])
    old = dst_parent.get(dst[-1])
    if old is not None and old.kind == "dir":
        raise VdriveLocalError("is-a-directory", f"{show(dst)} is a directory")
    if old is not None and (not op.replace or node.kind == "dir"):
        raise VdriveLocalError("exists", f"{show(dst)} already exists")
    ed.set(src[:-1], src_parent.without(src[-1]))
    moved = Entry(node.kind, node.cap, node.size, node.ctime, ed.now, node.mode)
    ed.set(dst[:-1], (await ed.dir(dst[:-1])).with_entry(dst[-1], moved))


async def apply_op(
    store: ObjectStore, root: DirCap | None, op: Op, now: float
) -> tuple[DirCap | None, TreeEditor]:
    """Apply ``op`` copy-on-write; returns (new root or None for a no-op, editor stats)."""
    ed = TreeEditor(store, root, now)
    if isinstance(op, Mkdir):
        await _mkdir(ed, op)
    elif isinstance(op, Link):
        await _link(ed, op)
    elif isinstance(op, Unlink):
        await _unlink(ed, op)
    else:
        await _rename(ed, op)
    return await ed.commit(), ed
