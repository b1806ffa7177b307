"""``p2pstore run``: the node's own entry point imports only what a node needs, and
parses as the full command line's ``run`` did (p2pstore/node/main.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from p2pstore.cli import main
from p2pstore.node import main as node_main
from p2pstore.node.main import (
    MEMCPY_THRESHOLD,
    MEMCPY_TUNABLE,
    NODE_PYTHON_ENV,
    _glibc_on_amd64,
    node_environment,
)
from p2pstore.node.runner import EXIT_CONFIG

# What a node process must never load: the other commands' modules cost RSS for as
# long as the node runs (docs/local-grid.md, "At scale"), and asyncssh loads only
# with [sftp] enabled.
NOT_IN_A_NODE = (
    "p2pstore.cli_commands",
    "p2pstore.cli_ops",
    "p2pstore.cli_webui",
    "p2pstore.cli_backup",
    "p2pstore.api_client",
    "p2pstore.api_drive",
    "p2pstore.backup",
    "p2pstore.node.localgrid",
    "p2pstore.sftp",
    "sqlite3",
    "asyncssh",
    "decimal",  # node/size.py parses "1.5GB" with integers
)


def test_the_run_path_imports_no_client_backup_or_sftp_module() -> None:
    # A fresh interpreter: `p2pstore run --help` through p2pstore.cli, then every
    # module the runner loads for a node with the default config (its services are
    # imported on start).
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        from p2pstore.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["run", "--help"])
        import p2pstore.node.grid_service, p2pstore.node.vdrive_wiring, p2pstore.web.server
        names = sys.argv[1:]
        bad = sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
        print(" ".join(bad))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *NOT_IN_A_NODE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert proc.stdout.split() == []


def test_run_help_is_the_subcommand_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: p2pstore run [-h] [DIR]")
    assert "--daemonized" not in out


def test_run_of_a_missing_node_dir_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["run", str(tmp_path / "none")])
    assert rc == EXIT_CONFIG
    assert "p2pstore:" in capsys.readouterr().err


def test_global_node_option_still_runs_through_the_full_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--node", str(tmp_path / "none"), "run"]) == EXIT_CONFIG
    assert "p2pstore:" in capsys.readouterr().err


def test_a_node_loads_no_cxx_runtime_and_freezes_its_imports(tmp_path: Path) -> None:
    # run_node imports the network stack (the runner's service) before it finds the
    # directory missing; frozenlist must have come up without its C++ extension, and
    # the imported objects are out of the cyclic collector's way.
    code = textwrap.dedent(
        """
        import gc, os, sys
        os.environ.pop("FROZENLIST_NO_EXTENSIONS", None)
        from p2pstore.node.main import run_node
        rc = run_node(sys.argv[1], daemonized=False)
        import frozenlist
        maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
        frozen = gc.get_freeze_count() > 50_000
        print(rc, "frozenlist._frozenlist" in sys.modules, "libstdc++" in maps, frozen)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert proc.stdout.split() == [str(EXIT_CONFIG), "False", "False", "True"]


def test_the_cli_imports_no_transport_and_no_grid() -> None:
    """Every CLI command pays its imports before it sends anything: the CLI talks HTTP
    to its node, so neither the QUIC stack (aioquic and cryptography's x509, ~0.2 s)
    nor the grid is imported until a command needs it (`join` dials; docs/grid.md,
    "Against Tahoe-LAFS on loopback")."""
    code = textwrap.dedent(
        """
        import sys
        import p2pstore.cli_commands, shell.app
        names = ("aioquic", "quic_transport.endpoint", "p2pstore.grid", "p2pstore.vdrive")
        bad = sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
        print(" ".join(bad))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert proc.stdout.split() == []


#: a real cap (100 MiB, 3-of-10), as `put` printed it
CHK = (
    "p2ps:chk:3:10:104857600:n4cufbpbof4jvzzpthxkawurl55wsvwm6b37hgam5enymem3prvq:"
    "5thsauqtdag27buky5z6aek7yqfn6laqmtnu4bytxtgjwjygot3q"
)


def test_a_cli_get_loads_neither_libsodium_cryptography_nor_node_machinery() -> None:
    # a valid cap is parsed in full (its storage index computed) before the node is
    # looked for; that takes hashlib only, and the parser is built without the
    # bootstrap, invitation, daemon or config modules (docs/architecture.md)
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        from p2pstore.cli import main
        with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
            rc = main(["--node", sys.argv[1], "get", sys.argv[2], sys.argv[1] + "/out"])
        from p2pstore.immutable import parse_cap
        assert parse_cap(sys.argv[2]).size == 100 << 20
        names = ("nacl", "cryptography", "p2pstore.node.bootstrap", "p2pstore.node.invitations",
                 "p2pstore.node.daemon", "p2pstore.node.config", "p2pstore.node.systemd")
        bad = sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
        print(rc, " ".join(bad))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "/nonexistent-node", CHK],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert proc.stdout.split() == ["3"]  # the node cannot be reached, and nothing loaded


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_a_nodes_threads_allocate_from_the_main_malloc_arena(tmp_path: Path) -> None:
    # malloc_trim never gives back the top of a thread's own arena: a node keeps its
    # worker threads in the main one (p2pstore/immutable/allocator.py). Four threads
    # hold 1 MB each at once, then malloc_info lists the arenas.
    code = textwrap.dedent(
        """
        import ctypes, sys, threading
        from p2pstore.node.main import run_node
        rc = run_node(sys.argv[1], daemonized=False)
        barrier = threading.Barrier(4)
        def work():
            held = [bytes(100_000) for _ in range(10)]
            barrier.wait()
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        libc = ctypes.CDLL("libc.so.6")
        libc.fopen.restype = ctypes.c_void_p
        out = libc.fopen(sys.argv[2].encode(), b"w")
        libc.malloc_info(0, ctypes.c_void_p(out))
        libc.fclose(ctypes.c_void_p(out))
        print(rc, open(sys.argv[2]).read().count("<heap nr="))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "none"), str(tmp_path / "malloc.xml")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert proc.stdout.split() == [str(EXIT_CONFIG), "1"]


def test_a_cli_get_imports_no_coder_storage_server_or_backup() -> None:
    # the packages load their names on first use (p2pstore/base/lazy.py): checking a
    # cap and talking HTTP to the node needs neither the erasure coder, the storage
    # server, the mutable-file records nor the backup database
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        from p2pstore.cli import main
        with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
            main(["--node", sys.argv[1], "get", "p2ps:chk:x", sys.argv[1] + "/out"])
        names = ("zfec", "p2pstore.immutable.encoder", "p2pstore.storage.server",
                 "p2pstore.mutable.root", "p2pstore.backup.snapshot", "sqlite3")
        print(" ".join(n for n in names if n in sys.modules))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "/nonexistent-node"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert proc.stdout.split() == []


def test_lazy_packages_give_the_same_objects_as_their_modules() -> None:
    import importlib

    for package in ("p2pstore.immutable", "p2pstore.mutable", "p2pstore.storage", "p2pstore.node"):
        pkg = importlib.import_module(package)
        for name in pkg.__all__:
            module = importlib.import_module(f"{package}.{pkg._MODULE_OF[name]}")
            assert getattr(pkg, name) is getattr(module, name), (package, name)
        assert pkg.errors is importlib.import_module(f"{package}.errors")  # a submodule
        with pytest.raises(AttributeError):
            _ = pkg.no_such_name


def test_node_environment_adds_the_memcpy_tunable_on_amd64_and_keeps_the_users() -> None:
    tunable = f"{MEMCPY_TUNABLE}={MEMCPY_THRESHOLD}"
    assert node_environment({"HOME": "/h"}, amd64=False) == {**NODE_PYTHON_ENV, "HOME": "/h"}
    assert node_environment({}, amd64=True) == {**NODE_PYTHON_ENV, "GLIBC_TUNABLES": tunable}
    mine = {"GLIBC_TUNABLES": "glibc.malloc.check=3", "PYTHONNODEBUGRANGES": "0"}
    env = node_environment(mine, amd64=True)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.check=3:{tunable}"
    assert env["PYTHONNODEBUGRANGES"] == "0"  # a value in the environment wins
    own = {"GLIBC_TUNABLES": f"{MEMCPY_TUNABLE}=0x1000:glibc.malloc.check=3"}
    assert node_environment(own, amd64=True)["GLIBC_TUNABLES"] == own["GLIBC_TUNABLES"]


def _amd64_glibc_here() -> bool:
    """Worked out apart from node/main.py's detection, to check it."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except (OSError, ValueError):
        return False
    return "AuthenticAMD" in cpuinfo or "HygonGenuine" in cpuinfo


def test_the_memcpy_tunable_is_added_on_this_machine_exactly_when_it_is_amd64() -> None:
    assert ("GLIBC_TUNABLES" in node_environment({})) == _amd64_glibc_here()


def test_amd64_detection_says_no_when_cpuinfo_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("no /proc here")

    _glibc_on_amd64.cache_clear()
    monkeypatch.setattr(node_main, "open", refuse, raising=False)
    try:
        assert _glibc_on_amd64() is False
        assert "GLIBC_TUNABLES" not in node_environment({})
    finally:
        monkeypatch.undo()
        _glibc_on_amd64.cache_clear()


LOADER = Path("/lib64/ld-linux-x86-64.so.2")


@pytest.mark.skipif(
    not (LOADER.exists() and platform.machine() == "x86_64"),
    reason="the tunable is an x86-64 glibc one",
)
def test_the_memcpy_tunable_is_one_this_glibc_reads() -> None:
    # glibc ignores a tunable it does not know, silently: ask its loader what it read
    env = {"GLIBC_TUNABLES": f"{MEMCPY_TUNABLE}={MEMCPY_THRESHOLD}"}
    listed = subprocess.run(
        [str(LOADER), "--list-tunables"], env=env, capture_output=True, text=True
    )
    if listed.returncode != 0:
        pytest.skip("this glibc's loader cannot list its tunables (before 2.33)")
    assert f"{MEMCPY_TUNABLE}: {MEMCPY_THRESHOLD} " in listed.stdout
