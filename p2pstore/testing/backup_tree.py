"""Generated folders for the backup tests and benchmark: nested, mixed sizes,
reproducible from a seed; and the changes the issue's check makes to them."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path


def _size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.15:
        return rng.randint(0, 55)  # literal caps: nothing stored
    if r < 0.70:
        return rng.randint(56, 4096)
    if r < 0.95:
        return rng.randint(4097, 65536)
    return rng.randint(65537, 1 << 20)


def backdate(path: Path, seconds: float = 3600.0) -> None:
    """Set ``path``'s mtime ``seconds`` ago (a backup does not remember a file written
    in the last two seconds as unchanged: it reads it again next time)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def make_tree(root: Path, files: int, *, seed: int = 1, depth: int = 3, fanout: int = 4) -> int:
    """``files`` files spread over nested folders below ``root`` (written an hour
    ago, as far as their mtimes say); their total size."""
    rng = random.Random(seed)
    dirs = [root]
    frontier = [root]
    for _ in range(depth):
        nxt = []
        for d in frontier:
            for j in range(rng.randint(1, fanout)):
                sub = d / f"dir{j}"
                nxt.append(sub)
        dirs += nxt
        frontier = nxt
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(files):
        d = rng.choice(dirs)
        n = _size(rng)
        (d / f"file{i:05d}.dat").write_bytes(rng.randbytes(n))
        os.chmod(d / f"file{i:05d}.dat", rng.choice((0o644, 0o600, 0o755, 0o640)))
        backdate(d / f"file{i:05d}.dat", 3600 + i)
        total += n
    return total


def regular_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def change_tree(
    root: Path, *, changed: int, added: int, removed: int, seed: int = 2
) -> dict[str, list[str]]:
    """Change, add and remove files; the relative paths of each kind."""
    rng = random.Random(seed)
    files = regular_files(root)
    picked = rng.sample(files, changed + removed)
    out: dict[str, list[str]] = {"changed": [], "added": [], "removed": []}
    for p in picked[:changed]:
        p.write_bytes(p.read_bytes() + b"changed" + rng.randbytes(64))
        backdate(p, 60)
        out["changed"].append(p.relative_to(root).as_posix())
    for p in picked[changed:]:
        p.unlink()
        out["removed"].append(p.relative_to(root).as_posix())
    for i in range(added):
        p = root / f"added{i}.txt"
        p.write_bytes(rng.randbytes(100 + i))
        backdate(p, 60)
        out["added"].append(p.relative_to(root).as_posix())
    return out


def assert_same_tree(a: Path, b: Path) -> None:
    """The same regular files below ``a`` and ``b``: bytes, permission bits, mtimes."""
    fa = [p.relative_to(a) for p in regular_files(a)]
    assert fa == [p.relative_to(b) for p in regular_files(b)]
    for rel in fa:
        sa, sb = (a / rel).stat(), (b / rel).stat()
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        assert sa.st_mode & 0o777 == sb.st_mode & 0o777, rel
        assert abs(sa.st_mtime - sb.st_mtime) < 0.01, rel
