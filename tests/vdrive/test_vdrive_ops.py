"""Copy-on-write updates: only the directories on the changed path are rewritten,
everything else is shared by cap; failures write nothing; and the tree behaves
exactly like the reference in-memory vdrive under random operation sequences."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.app.drive import VdriveApplication
from p2pstore.app.errors import AppError
from p2pstore.app.vpath import parse_vpath
from p2pstore.immutable import LiteralCap, ReadCap
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.testing.vdrive import local_vdrive
from p2pstore.vdrive.dirnode import DirCap
from p2pstore.vdrive.errors import VdriveLocalError
from p2pstore.vdrive.objects import MemoryObjectStore
from p2pstore.vdrive.ops import Link, Mkdir, Rename, Unlink, apply_op, list_dir, load_dir

CAP = ReadCap(3, 10, 5000, bytes(range(32)), bytes(range(32, 64)))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def build(store: MemoryObjectStore, width: int, depth: int) -> DirCap:
    """A tree with ``width`` files in each of ``depth`` nested directories d0/d1/..."""
    root: DirCap | None = None
    path: tuple[str, ...] = ()
    for level in range(depth):
        path = (*path, f"d{level}")
        root, _ = await apply_op(store, root, Mkdir(path), 1.0)
    p: tuple[str, ...] = ()
    for level in range(depth):
        p = (*p, f"d{level}")
        for i in range(width):
            root, _ = await apply_op(store, root, Link((*p, f"f{i}"), LiteralCap(b"x")), 1.0)
    assert root is not None
    return root


def test_change_rewrites_only_the_path() -> None:
    async def go() -> None:
        store = MemoryObjectStore()
        root = await build(store, width=20, depth=6)
        before = store.stats.puts
        path = ("d0", "d1", "d2", "d3", "d4", "new")
        new_root, ed = await apply_op(store, root, Link(path, CAP), 2.0)
        assert new_root is not None
        assert ed.written == 6 and store.stats.puts - before == 6  # 5 dirs on the path + root
        assert ed.loaded == 6
        # the untouched subtree d5 is shared by cap between the versions
        old = await list_dir(store, root, ("d0", "d1", "d2", "d3", "d4"))
        new = await list_dir(store, new_root, ("d0", "d1", "d2", "d3", "d4"))
        assert old["d5"].cap == new["d5"].cap
        assert "new" in new and "new" not in old
        # the old version is still readable (immutable snapshot)
        assert "f3" in await list_dir(store, root, ("d0",))

    run(go())


def test_rename_across_branches_rewrites_both_paths() -> None:
    async def go() -> None:
        store = MemoryObjectStore()
        root = None
        for p in [("a", "b"), ("c", "d")]:
            root, _ = await apply_op(store, root, Mkdir(p, parents=True), 1.0)
        root, _ = await apply_op(store, root, Link(("a", "b", "f"), CAP), 1.0)
        root2, ed = await apply_op(store, root, Rename(("a", "b", "f"), ("c", "d", "g")), 2.0)
        assert ed.written == 5  # a/b, a, c/d, c, root
        assert "g" in await list_dir(store, root2, ("c", "d"))
        assert "f" not in await list_dir(store, root2, ("a", "b"))

    run(go())


def test_failures_write_nothing_and_noops_return_none() -> None:
    async def go() -> None:
        store = MemoryObjectStore()
        root, _ = await apply_op(store, None, Mkdir(("a", "b"), parents=True), 1.0)
        root, _ = await apply_op(store, root, Link(("a", "f"), CAP), 1.0)
        puts = store.stats.puts
        for op, code in [
            (Mkdir(("a",)), "exists"),
            (Mkdir(("x", "y")), "not-found"),
            (Link(("a", "f"), CAP), "exists"),
            (Link(("a", "b"), CAP, replace=True), "is-a-directory"),
            (Link(("a", "f", "g"), CAP), "not-a-directory"),
            (Unlink(()), "bad-path"),
            (Unlink(("zz",)), "not-found"),
            (Rename(("a",), ("a", "b", "c")), "bad-path"),
            (Rename(("a", "b"), ("a", "f"), replace=True), "exists"),
        ]:
            try:
                await apply_op(store, root, op, 2.0)
            except VdriveLocalError as e:
                assert e.code == code, (op, e.code)
            else:
                raise AssertionError(f"{op} did not fail")
        assert store.stats.puts == puts
        noops = [Mkdir(("a", "b"), parents=True), Mkdir((), parents=True), Rename(("a",), ("a",))]
        for op in noops:
            new, _ = await apply_op(store, root, op, 2.0)
            assert new is None
        assert store.stats.puts == puts
        assert len(await load_dir(store, root)) == 1

    run(go())


# ---- model comparison with the reference in-memory vdrive -------------------------
NAMES = ["a", "b", "c"]
paths = st.lists(st.sampled_from(NAMES), min_size=0, max_size=3).map(lambda p: "/" + "/".join(p))
ops = st.one_of(
    st.tuples(st.just("mkdir"), paths, st.booleans()),
    st.tuples(st.just("link"), paths, st.booleans()),
    st.tuples(st.just("unlink"), paths, st.booleans()),
    st.tuples(st.just("rename"), st.tuples(paths, paths), st.booleans()),
)


async def do(vd: Any, op: tuple[str, Any, bool]) -> Any:
    kind, arg, flag = op
    try:
        if kind == "mkdir":
            return await vd.vdrive_mkdir(parse_vpath(arg), parents=flag, expected_sequence=None)
        if kind == "link":
            return await vd.vdrive_link(parse_vpath(arg), CAP, replace=flag, expected_sequence=None)
        if kind == "unlink":
            return await vd.vdrive_unlink(parse_vpath(arg), recursive=flag, expected_sequence=None)
        src, dst = arg
        return await vd.vdrive_rename(
            parse_vpath(src), parse_vpath(dst), replace=flag, expected_sequence=None
        )
    except AppError as e:
        return e.code


async def snapshot(vd: Any, path: str = "/") -> Any:
    listing = await vd.vdrive_list(parse_vpath(path))
    out: dict[str, Any] = {}
    for e in listing.entries:
        sub = (path.rstrip("/") + "/" + e.name) if path != "/" else "/" + e.name
        out[e.name] = await snapshot(vd, sub) if e.kind == "dir" else e.size
    return out


@settings(max_examples=60)
@given(st.lists(ops, max_size=25))
def test_same_behaviour_as_reference(seq: list[tuple[str, Any, bool]]) -> None:
    async def go() -> None:
        ref, cow = MemoryVdrive(), VdriveApplication(local_vdrive())
        for op in seq:
            assert await do(ref, op) == await do(cow, op), op
        assert await snapshot(ref) == await snapshot(cow)
        assert (await ref.vdrive_list(parse_vpath("/"))).sequence == (
            await cow.vdrive_list(parse_vpath("/"))
        ).sequence

    run(go())


def test_oversized_dircap_is_never_fetched_and_cache_is_bounded() -> None:
    from p2pstore.vdrive.errors import VdriveRemoteError
    from p2pstore.vdrive.objects import CachingStore, DecodedCache

    async def go() -> None:
        store = MemoryObjectStore()
        huge = DirCap(ReadCap(3, 10, 2**40, bytes(32), bytes(32)))
        try:
            await load_dir(store, huge)
        except VdriveRemoteError as e:
            assert e.code == "bad-directory"
        else:
            raise AssertionError("fetched an impossible directory")
        assert store.stats.gets == 0
        cache = DecodedCache(max_items=3, max_weight=10)
        for i in range(5):
            cache.put(str(i), [0, 0])  # weight 3 each
        assert cache.get("0") is None and cache.get("4") is not None
        assert cache._weight <= 10
        cache.put("big", list(range(20)))  # heavier than half the budget: not kept
        assert cache.get("big") is None
        # the caching store returns decoded directories without refetching
        cs = CachingStore(store)
        root, _ = await apply_op(cs, None, Mkdir(("a", "b", "c"), parents=True), 1.0)
        gets = store.stats.gets
        assert "c" in await list_dir(cs, root, ("a", "b"))
        assert store.stats.gets == gets

    run(go())
