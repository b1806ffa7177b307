"""What each shell command does, given a parsed :class:`~shell.parse.Invocation`:
calls to the node through :class:`~shell.session.Api`, text to an :class:`Output`.
No prompt_toolkit here: tests drive :class:`Shell` with a recording output.

Invariants:
- every failure of one command is caught by :meth:`Shell.run_line` and shown as one
  line (``error: ...``, ``node unreachable: ...``); a traceback only with ``debug``;
- ``get`` writes ``.NAME.part-*`` next to the destination and renames it into place
  only when every byte arrived; on failure or Ctrl-C the part file is removed;
- ``put`` links only after the whole upload; Ctrl-C cuts the connection, so the
  node stores and links nothing;
- writes (put, mkdir, rm, mv, ln) clear the completion listing cache.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat as stat_mod
import tempfile
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, Any, Final, Protocol, cast

from p2pstore.api_client import ApiCallError, ClientError
from p2pstore.api_drive import (
    DeepChecks,
    OutcomeUnknown,
    is_lost,
    local_first,
    new_op_id,
    settle,
    settled,
    walk_files,
)
from p2pstore.app.vpath import VPath
from p2pstore.base.fsutil import umask
from p2pstore.base.progress import human_bytes
from p2pstore.base.reports import (
    DEEP_STATES,
    check_lines,
    deep_state,
    helper_notes,
    info_lines,
    peer_lines,
    pin_lines,
    safe,
)
from p2pstore.immutable import CapError, VerifyCap, parse_cap

from . import backup_cmds, live_cmds, mutable_cmds, render
from .errors import Cancelled, RemoteError, ShellError, UsageError
from .parse import Invocation, lookup, parse_line, quote_word
from .paths import (
    is_cap,
    put_source_size,
    resolve_local,
    resolve_remote,
    root_of,
    show_local,
    show_remote,
)
from .session import Api, Connection, Entries, ListingCache, ShellState
from .transfer import CancelFlag, CancellableReader, CancellableWriter, TransferRunner

CAT_LIMIT: Final = 1 << 20


def _mkdir(path: str, parents: bool, api: Api, op_id: str) -> dict[str, Any]:
    return api.mkdir(path, parents=parents, op_id=op_id)


def _unlink(path: str, recursive: bool, api: Api, op_id: str) -> dict[str, Any]:
    return api.unlink(path, recursive=recursive, op_id=op_id)


class Output(Protocol):
    @property
    def width(self) -> int: ...

    def line(self, text: str) -> None: ...
    def lines(self, lines: list[str], *, page: bool = False) -> None: ...
    def progress(self, text: str) -> None: ...
    def progress_done(self) -> None: ...
    def clear(self) -> None: ...


class Shell:
    def __init__(
        self,
        conn: Connection,
        out: Output,
        state: ShellState,
        *,
        transfers: TransferRunner | None = None,
        cache: ListingCache | None = None,
        debug: bool = False,
    ) -> None:
        self.conn = conn
        self.out = out
        self.state = state
        self.transfers = transfers or TransferRunner(out)
        self.cache = cache or ListingCache()
        self.debug = debug
        self._handlers: dict[str, Callable[[Invocation], None]] = {
            name[4:].replace("_", "-"): getattr(self, name)
            for name in dir(self)
            if name.startswith("cmd_")
        }

    # -- the loop's entry points --------------------------------------------------
    def prompt(self) -> str:
        return render.prompt_text(self.conn.name, self.state.cwd)

    def run_line(self, line: str) -> bool:
        """Run one line; False when the shell should exit. Never raises (except
        KeyboardInterrupt outside transfers, which the prompt loop handles)."""
        try:
            inv = parse_line(line)
            if inv is None:
                return True
            if inv.command == "exit":
                return False
            self._handlers[inv.command](inv)
        except KeyboardInterrupt:
            self.out.line("interrupted")
        except Exception as e:
            self.conn.note_failure(e)
            if self.debug:
                self.out.lines(traceback.format_exc().rstrip().splitlines())
            self.out.line(render.error_line(e))
        return True

    def api(self) -> Api:
        return self.conn.client()

    def remote(self, word: str) -> VPath:
        return resolve_remote(word, self.state.cwd)

    def local(self, word: str) -> Path:
        return resolve_local(word, self.state.local_cwd)

    def listing(self, path: VPath) -> Entries:
        """A directory's entries through the cache (for completion)."""
        cached = self.cache.get(path)
        if cached is None:
            cached = list(self.api().ls(str(path))["entries"])
            self.cache.put(path, cached)
        return cached

    def _stat(self, path: VPath) -> dict[str, Any] | None:
        """The entry at ``path``, or None if there is none."""
        if path.is_root:
            return {"name": "", "kind": "dir", "size": None, "cap": None}
        try:
            entry: dict[str, Any] = self.api().stat(str(path))["entry"]
            return entry
        except ApiCallError as e:
            if e.code == "not-found":
                return None
            raise

    def _file_cap(self, word: str, *, readable: bool) -> tuple[str, str | None, int | None]:
        """(cap, path shown or None, size) for a PATH|CAP argument."""
        if is_cap(word):
            if (mutable := mutable_cmds.file_cap(self, word, readable=readable)) is not None:
                return mutable
            try:
                cap = parse_cap(word)
            except CapError as e:
                raise UsageError(str(e)) from None
            if readable and isinstance(cap, VerifyCap):
                raise UsageError("a verify cap cannot read a file; use the read cap")
            return word, None, cap.size
        path = self.remote(word)
        entry = self._stat(path)
        if entry is None:
            raise RemoteError(f"{show_remote(path)}: no such file or directory")
        if entry["kind"] != "file" or not entry.get("cap"):
            raise RemoteError(f"{show_remote(path)} is a directory")
        return str(entry["cap"]), str(path), entry.get("size")

    # -- remote navigation --------------------------------------------------------
    def cmd_ls(self, inv: Invocation) -> None:
        path = self.remote(inv.args[0]) if inv.args else self.state.cwd
        try:
            entries = list(self.api().ls(str(path))["entries"])
            self.cache.put(path, entries)
        except ApiCallError as e:
            if e.code != "not-a-directory":
                raise
            entries = [self.api().stat(str(path))["entry"]]
        if not entries:
            self.out.lines([render.EMPTY_DIR])
        elif inv.flag("long"):
            self.out.lines(render.ls_long(entries), page=True)
        else:
            self.out.lines(render.ls_short(entries, self.out.width), page=True)

    def cmd_cd(self, inv: Invocation) -> None:
        word = inv.args[0] if inv.args else None
        if word == "-":
            if self.state.previous is None:
                raise UsageError("cd -: no previous directory")
            path = self.state.previous
        else:
            path = root_of(self.state.drive) if word is None else self.remote(word)
        entry = self._stat(path)
        if entry is None:
            raise RemoteError(f"{show_remote(path)}: no such directory")
        if entry["kind"] != "dir":
            raise RemoteError(f"{show_remote(path)} is not a directory")
        if path.is_root:
            self.api().ls(str(path))  # the drive must be there (vdrive-unavailable otherwise)
        self.state.go(path)

    def cmd_pwd(self, inv: Invocation) -> None:
        self.out.line(show_remote(self.state.cwd))

    def cmd_drive(self, inv: Invocation) -> None:
        live_cmds.drive(self, inv)

    # -- remote changes -----------------------------------------------------------
    def change(self, path: VPath, what: str, call: Callable[[Api, str], Any]) -> Any:
        """One drive change; if its answer is lost, ask the node what became of it."""
        api = self.api()
        what = show_remote(what)  # it is said if the answer is lost: no live cap
        return settled(self._fresh_api, path.drive, what, lambda i: call(api, i), say=self.out.line)

    def _fresh_api(self) -> Api:
        self.conn.drop()  # the node may be restarting, perhaps on a new port
        return self.conn.client()

    def cmd_mkdir(self, inv: Invocation) -> None:
        if live_cmds.mkdir_live(self, inv):
            return
        parents = inv.flag("parents")
        for word in inv.args:
            path = self.remote(word)
            self.change(path, f"mkdir {path}", partial(_mkdir, str(path), parents))
        self.cache.clear()

    def cmd_rm(self, inv: Invocation) -> None:
        recursive = inv.flag("recursive")
        for word in inv.args:
            path = self.remote(word)
            if path.is_root:
                raise UsageError("rm: a drive's root cannot be removed", "rm")
            self.change(path, f"rm {path}", partial(_unlink, str(path), recursive))
            self.cache.clear()
            if self.state.cwd.is_within(path):
                self.state.cwds[path.drive] = path.parent

    def cmd_mv(self, inv: Invocation) -> None:
        src, dst = self.remote(inv.args[0]), self.remote(inv.args[1])
        if src.is_root:
            raise UsageError("mv: a drive's root cannot be moved", "mv")
        target = self._stat(dst)
        if target is not None and target["kind"] == "dir":
            dst = dst.child(src.name)
        replace = inv.flag("force")
        try:
            if src.drive == dst.drive:
                self.change(
                    src,
                    f"mv {src}",
                    lambda a, i: a.rename(str(src), str(dst), replace=replace, op_id=i),
                )
                return
            entry = self._stat(src)
            if entry is None:
                raise RemoteError(f"{show_remote(src)}: no such file or directory")
            if entry["kind"] != "file":
                raise UsageError("mv: directories cannot move between drives", "mv")
            cap = str(entry["cap"])
            self.change(
                dst, f"ln {dst}", lambda a, i: a.link(str(dst), cap, replace=replace, op_id=i)
            )
            self.change(src, f"rm {src}", lambda a, i: a.unlink(str(src), op_id=i))
        finally:
            self.cache.clear()

    def cmd_ln(self, inv: Invocation) -> None:
        cap, _, _ = self._file_cap(inv.args[0], readable=True)
        if not is_cap(inv.args[0]):
            raise UsageError("ln: the first argument is a cap (p2ps:...)", "ln")
        dst, force = self.remote(inv.args[1]), inv.flag("force")
        self.change(dst, f"ln {dst}", lambda a, i: a.link(str(dst), cap, replace=force, op_id=i))
        self.cache.clear()

    # -- transfers ----------------------------------------------------------------
    def cmd_put(self, inv: Invocation) -> None:
        if mutable_cmds.is_mutable_put(inv):
            return mutable_cmds.put(self, inv)
        src = self.local(inv.args[0])
        size = put_source_size(src, inv.args[0])
        if len(inv.args) > 1:
            word = inv.args[1]
            dst = self.remote(word)
            entry = self._stat(dst)
            if word.endswith("/") or (entry is not None and entry["kind"] == "dir"):
                dst = dst.child(src.name)
        else:
            dst = self.state.cwd.child(src.name)
        mode = inv.values.get("mode", "convergent")
        api = self.api()
        before = self._stat(dst)
        two_passes = mode == "convergent" and size is not None
        op_id = new_op_id()
        stored = [0]  # bytes the node has placed (convergent: only after the whole body)

        def work(flag: CancelFlag) -> dict[str, Any]:
            flag.on_cancel(api.abort)  # Ctrl-C cuts the connection: the node stops the upload
            with open(src, "rb") as f:
                reader = cast(IO[bytes], CancellableReader(f, flag))
                # a regular file is read by the node in place when it can (local_first)
                return local_first(
                    api,
                    str(src),
                    reader,
                    lambda s: api.put_path(
                        s,
                        str(dst),
                        size=size,
                        mode=mode,
                        replace=not inv.flag("no_replace"),
                        progress=flag.progress,
                        stored=lambda n: stored.__setitem__(0, n),
                        op_id=op_id,
                    ),
                )

        width = self.out.width

        def bar(done: int, elapsed: float) -> str:
            # both passes of a convergent upload: never 100% while the node still works
            if stored[0] > 0:
                return render.progress_line("put (storing)", stored[0], size, elapsed, width)
            if not two_passes:
                return render.progress_line("put", done, size, elapsed, width)
            return render.progress_line("put (sending)", done, size, elapsed, width)

        try:
            doc = self.transfers.run(work, bar)
        except ClientError as e:
            if not is_lost(e):
                if isinstance(e, ApiCallError) and "uploaded_cap" in e.details:
                    self.out.line(f"uploaded, but not linked; its cap: {e.details['uploaded_cap']}")
                raise
            what = f"put {show_remote(dst)}"
            settle(self._fresh_api, dst.drive, op_id, what, e, say=self.out.line)
            doc = self._fresh_api().stat(str(dst))["entry"]
        except Cancelled:
            self.cache.clear()
            self._say_what_a_cancel_kept(dst, before, op_id)
            raise
        finally:
            self.cache.clear()
        said = f"put {show_remote(dst)} ({human_bytes(int(doc.get('size', 0)))})"
        self.out.lines([said, *helper_notes(doc)])

    def _say_what_a_cancel_kept(
        self, dst: VPath, before: dict[str, Any] | None, op_id: str | None = None
    ) -> None:
        """The node stops an upload whose client has gone and links nothing; but a Ctrl-C
        that comes as the node links the file is too late. Ask what became of the
        change (definite: one not made by now never will be); if the node cannot
        say, look, and tell the truth."""
        if op_id is not None:
            try:
                settle(
                    self._fresh_api,
                    dst.drive,
                    op_id,
                    f"put {show_remote(dst)}",
                    ClientError("cancelled"),
                    wait=5,
                )
            except OutcomeUnknown:
                pass  # look instead
            except ClientError:
                return  # not made, and never will be
            else:
                raise Cancelled(
                    f"cancelled too late: the upload had finished and {show_remote(dst)} was "
                    f"linked (remove it with: rm {quote_word(str(dst))})"
                )
        after: dict[str, Any] | None = None
        with contextlib.suppress(ShellError, ApiCallError, OSError):
            after = self._stat(dst)
        if after is not None and (before is None or after.get("cap") != before.get("cap")):
            raise Cancelled(
                f"cancelled too late: the upload had finished and {show_remote(dst)} was "
                f"linked (remove it with: rm {quote_word(str(dst))})"
            )

    def cmd_get(self, inv: Invocation) -> None:
        word = inv.args[0]
        cap, shown, size = self._file_cap(word, readable=True)
        if len(inv.args) > 1:
            dest = self.local(inv.args[1])
            if dest.is_dir():
                if shown is None:
                    raise UsageError("get CAP: give a file name for LOCAL", "get")
                dest = dest / self.remote(word).name
        elif shown is None:
            raise UsageError("get CAP: give a LOCAL file name (a cap holds no name)", "get")
        else:
            dest = self.state.local_cwd / self.remote(word).name
        if not dest.parent.is_dir():
            raise ShellError(f"{dest.parent}: no such local directory")
        if dest.exists() and not inv.flag("force"):
            where = safe(show_local(dest, self.state.local_cwd))
            raise ShellError(f"{where} exists; use get -f to replace it")
        api = self.api()
        mode = 0o666 & ~umask()  # as a file the user created (mkstemp makes 0600)

        def work(flag: CancelFlag) -> int:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.part-", dir=dest.parent)
            ok = False
            try:
                with os.fdopen(fd, "wb") as f:
                    sink = cast(IO[bytes], CancellableWriter(f, flag))
                    if shown is None:
                        n = api.get(cap, sink, progress=flag.progress)
                    else:
                        n = api.get_path(shown, sink, progress=flag.progress)
                flag.check()
                os.chmod(tmp, mode)
                os.replace(tmp, dest)
                ok = True
                return n
            finally:
                if not ok:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)

        n = self.transfers.run(work, self._bar("get", size))
        where = show_local(dest, self.state.local_cwd)
        self.out.line(f"got {safe(where)} ({human_bytes(n)})")

    def _bar(self, label: str, total: int | None) -> Callable[[int, float], str]:
        width = self.out.width
        return lambda done, elapsed: render.progress_line(label, done, total, elapsed, width)

    def cmd_cat(self, inv: Invocation) -> None:
        cap, shown, size = self._file_cap(inv.args[0], readable=True)
        if size is not None and size > CAT_LIMIT:
            raise UsageError(f"cat: the file is {human_bytes(size)}; use get for files over 1 MiB")
        buf = io.BytesIO()
        if shown is None:
            self.api().get(cap, buf)
        else:
            self.api().get_path(shown, buf)
        text = buf.getvalue().decode("utf-8", "replace").expandtabs()
        self.out.lines([safe(ln) for ln in text.splitlines()], page=True)

    # -- files: facts and health -------------------------------------------------
    def cmd_info(self, inv: Invocation) -> None:
        word = inv.args[0]
        if not is_cap(word):
            path = self.remote(word)
            entry = self._stat(path)
            if entry is None:
                raise RemoteError(f"{show_remote(path)}: no such file or directory")
            if entry["kind"] == "dir":
                n = len(self.api().ls(str(path))["entries"])
                self.out.lines(
                    [
                        f"path:          {show_remote(path)}",
                        "kind:          directory",
                        f"entries:       {n}",
                        f"modified:      {render.when(entry.get('mtime'))}",
                        *live_cmds.root_lines(path),
                    ]
                )
                return
        cap, shown, _ = self._file_cap(word, readable=False)
        doc = self.api().info(cap)
        self.out.lines(info_lines(doc, path=shown and show_remote(shown), cap=cap))

    def _check(self, word: str, *, verify: bool, repair: bool) -> None:
        cap, _, _ = self._file_cap(word, readable=False)
        self.out.lines(check_lines(self.api().check(cap, verify=verify, repair=repair)))

    def cmd_check(self, inv: Invocation) -> None:
        if inv.flag("deep"):
            self._deep_check(inv.args[0], verify=inv.flag("verify"), repair=inv.flag("repair"))
            return
        self._check(inv.args[0], verify=inv.flag("verify"), repair=inv.flag("repair"))

    def _deep_check(self, word: str, *, verify: bool, repair: bool) -> None:
        """Every file below a directory, with a progress line (``check --deep``)."""
        if is_cap(word):
            raise UsageError("check --deep needs a directory path (e.g. shared:/)")
        root = str(self.remote(word))
        problems: list[str] = []
        files = walk_files(self.api(), root, problems)
        counts = dict.fromkeys(DEEP_STATES, 0)
        check = DeepChecks(self.api(), verify=verify, repair=repair)
        for i, (path, entry) in enumerate(files, 1):
            self.out.progress(f"checking {i}/{len(files)}: {show_remote(path)}")
            state = deep_state(check(str(entry["cap"])))
            counts[state] += 1
            if state != "healthy":
                self.out.progress_done()
                self.out.line(f"{state}: {show_remote(path)}")
        self.out.progress_done()
        summary = check.summary(len(files), show_remote(root), counts)
        self.out.lines([*(f"problem: {safe(p)}" for p in problems), summary])

    def cmd_verify(self, inv: Invocation) -> None:
        self._check(inv.args[0], verify=True, repair=False)

    def cmd_repair(self, inv: Invocation) -> None:
        self._check(inv.args[0], verify=inv.flag("verify"), repair=True)

    def cmd_pin(self, inv: Invocation) -> None:
        cap, path, _ = self._file_cap(inv.args[0], readable=False)
        doc = self.api().pin(cap, path or "")
        again = "pinned" if doc.get("new") else "already pinned"
        self.out.lines([f"{again}: lease renewed on {doc.get('holders')} holders"])

    def cmd_unpin(self, inv: Invocation) -> None:
        cap, _, _ = self._file_cap(inv.args[0], readable=False)
        self.api().unpin(cap)
        self.out.lines(["unpinned: this node no longer renews the file"])

    def cmd_pins(self, inv: Invocation) -> None:
        self.out.lines(pin_lines(self.api().pins()), page=True)

    # -- node ---------------------------------------------------------------------
    def cmd_peers(self, inv: Invocation) -> None:
        self.out.lines(peer_lines(self.api().peers()), page=True)

    def cmd_status(self, inv: Invocation) -> None:
        api = self.api()
        self.out.lines(render.status_lines(api.status(), api.url))

    def cmd_bootstrap(self, inv: Invocation) -> None:
        self.out.lines(render.bootstrap_lines(self.api().bootstrap()))

    def cmd_backup(self, inv: Invocation) -> None:
        backup_cmds.backup(self, inv)

    def cmd_restore(self, inv: Invocation) -> None:
        backup_cmds.restore(self, inv)

    def cmd_clear(self, inv: Invocation) -> None:
        self.out.clear()

    def cmd_help(self, inv: Invocation) -> None:
        if not inv.args:
            self.out.lines(render.help_lines())
            return
        spec = lookup(inv.args[0])
        if spec is None:
            raise UsageError(f"help: no command {inv.args[0]!r}", "help")
        self.out.lines(render.help_lines(spec))

    # -- local side ---------------------------------------------------------------
    def cmd_lls(self, inv: Invocation) -> None:
        path = self.local(inv.args[0]) if inv.args else self.state.local_cwd
        if not path.is_dir():
            entries = [_local_entry(path.name, path)]
        else:
            with os.scandir(path) as it:
                entries = [_local_entry(e.name, Path(e.path)) for e in it]
        if not entries:
            self.out.lines([render.EMPTY_DIR])
        elif inv.flag("long"):
            self.out.lines(render.ls_long(entries), page=True)
        else:
            self.out.lines(render.ls_short(entries, self.out.width), page=True)

    def cmd_lcd(self, inv: Invocation) -> None:
        path = self.local(inv.args[0]) if inv.args else Path.home()
        if not path.is_dir():
            raise ShellError(f"lcd: {inv.args[0] if inv.args else path}: not a directory")
        self.state.local_cwd = path

    def cmd_lpwd(self, inv: Invocation) -> None:
        self.out.line(str(self.state.local_cwd))


def _local_entry(name: str, path: Path) -> dict[str, Any]:
    try:
        st = path.stat()  # follows symlinks, as ls -L
    except OSError:
        st = path.lstat()  # a broken link: show the link itself
    is_dir = stat_mod.S_ISDIR(st.st_mode)
    return {
        "name": name,
        "kind": "dir" if is_dir else "file",
        "size": None if is_dir else st.st_size,
        "mtime": st.st_mtime,
    }
