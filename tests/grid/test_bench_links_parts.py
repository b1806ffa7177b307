"""The pure parts of the shaped-link benchmarks: the physical limits every figure is set
beside, and how the Tahoe-LAFS comparison reads its nodes' pages (the runs themselves
need root and Tahoe: ``make bench-links``, ``make bench-links-tahoe``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from benchmarks.bench_links import (
    Op,
    arguments,
    idle_cpu,
    limits,
    report,
    set_affinity,
    split_cpus,
)
from benchmarks.bench_links_tahoe import connected_servers, helper_connected
from tests.nat_grid import set_config


def test_limits_are_bytes_over_the_link() -> None:
    up, helper, down = limits(100 << 20, 20, 100, 3, 10)
    # 100 MiB x 10/3 over 2.5 MB/s; 100 MiB over 2.5 MB/s; 100 MiB over 12.5 MB/s
    assert up == pytest.approx(139.81, abs=0.01)
    assert helper == pytest.approx(41.94, abs=0.01)
    assert down == pytest.approx(8.39, abs=0.01)
    # a helper upload's limit does not depend on the encoding, a direct one's does
    up_1of1, helper_1of1, _ = limits(100 << 20, 20, 100, 1, 1)
    assert helper_1of1 == helper and up_1of1 == pytest.approx(helper)


def test_the_bench_s_config_edit_changes_only_the_key_in_its_section(tmp_path: Path) -> None:
    """The shaped-link bench sets ``uplink_queue_ms`` with tests.nat_grid.set_config."""
    conf = tmp_path / "p2pstore.toml"
    conf.write_text(
        "[limits]\nupload_rate = 0\nuplink_queue_ms = 60\n# uplink_queue_ms = 60\n"
        "[other]\nuplink_queue_ms = 5\n"
    )
    set_config(tmp_path, "limits", {"uplink_queue_ms": 0})
    assert conf.read_text() == (
        "[limits]\nupload_rate = 0\nuplink_queue_ms = 0\n# uplink_queue_ms = 60\n"
        "[other]\nuplink_queue_ms = 5\n"
    )


def test_the_bench_s_config_edit_never_loses_the_setting(tmp_path: Path) -> None:
    """A configuration without the line gets it (checked by parsing), rather than the
    edit silently doing nothing."""
    conf = tmp_path / "p2pstore.toml"
    conf.write_text("[limits]\nupload_rate = 0\n")
    set_config(tmp_path, "limits", {"uplink_queue_ms": 0})
    assert tomllib.loads(conf.read_text())["limits"] == {"upload_rate": 0, "uplink_queue_ms": 0}


def test_connected_servers_counts_only_connected_ones() -> None:
    page = {
        "introducers": {"statuses": []},
        "servers": [
            {"nodeid": "v0-a", "connection_status": "Connected to tcp:10.78.0.10:4001 via tcp"},
            {"nodeid": "v0-b", "connection_status": "Trying to connect"},
            {"nodeid": "v0-c", "connection_status": "Connected to tcp:10.78.0.12:4001 via tcp"},
            {"nodeid": "v0-d"},
            {"nodeid": "v0-e", "connection_status": "connected"},  # the HTTPS protocol's
            {"nodeid": "v0-f", "connection_status": "failure: connection refused"},
        ],
    }
    assert connected_servers(json.dumps(page)) == 3


@pytest.mark.parametrize("body", ["", "not json", "[]", '{"servers": null}'])
def test_connected_servers_of_no_page_is_zero(body: str) -> None:
    assert connected_servers(body) == 0


def test_helper_connected_reads_the_welcome_page() -> None:
    assert helper_connected("<h3>Helper</h3><div>Helper</div>")
    assert not helper_connected("<h3>Helper</h3><div>Helper not connected</div>")
    assert not helper_connected("")  # the page did not load


def test_idle_cpu_is_per_second_and_optional() -> None:
    me = {"me": os.getpid()}
    assert idle_cpu(me, 0) == {}  # --idle 0: no figure, no division by zero
    rate = idle_cpu(me, 0.2)["me"]
    assert 0 <= rate <= 2.5  # CPU-seconds a second: a sleeping test uses next to none


def test_report_sets_each_time_beside_its_limit_and_its_bytes() -> None:
    args = arguments().parse_args(["--mib", "100"])
    size = 100 << 20

    def op(seconds: float, wire_in: int, wire_out: int) -> Op:
        return Op(seconds, "", "", {"home": 1.0}, (wire_in, wire_out))

    ops = {
        "put": op(147.9, 2_000_000, 368_800_000),  # a direct put sends N/k of the file
        "get": op(9.5, 110_800_000, 900_000),
        "before": op(9.6, 0, 0),
        "put_helper": op(45.9, 1_000_000, 110_600_000),
        "get_helper": op(10.1, 110_800_000, 0),
        "again": op(9.7, 110_800_000, 0),
        "helper_again": op(9.3, 0, 0),
    }
    doc = report(args, size, ops)
    assert doc["put_over_limit"] == pytest.approx(147.9 / 139.81, abs=0.001)
    # a put's bytes are the ones it sent up, a get's the ones it received
    assert doc["put_direct_wire_mb"] == 368.8
    assert doc["put_direct_wire_limit_s"] == pytest.approx(368.8e6 * 8 / 20e6, abs=0.01)
    assert doc["get_wire_limit_s"] == pytest.approx(110.8e6 * 8 / 100e6, abs=0.01)
    assert doc["put_helper_wire_limit_s"] == pytest.approx(110.6e6 * 8 / 20e6, abs=0.01)
    assert doc["get_before_restart_again_s"] == 9.6 and doc["get_helper_again_s"] == 9.3
    assert doc["put_direct_cpu_s"] == {"home": 1.0}


def test_pin_moves_every_thread_of_a_process() -> None:
    """--pin's affinity reaches each thread of a node, not only its main one."""
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("CPU affinity is Linux's")
    ours = os.sched_getaffinity(0)
    if len(ours) < 2:
        pytest.skip("needs two CPUs")
    target = frozenset(sorted(ours)[1:2])
    code = (
        "import threading, time\n"
        "for _ in range(3): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "print('ready', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        tasks = [int(t.name) for t in Path(f"/proc/{proc.pid}/task").iterdir()]
        assert len(tasks) >= 4  # the main thread and the three it started
        assert all(os.sched_getaffinity(t) == ours for t in tasks)
        set_affinity(proc.pid, target)
        assert all(os.sched_getaffinity(t) == target for t in tasks)
    finally:
        proc.kill()
        proc.wait()


def test_pin_splits_the_cpus_home_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 1, 2})
    assert split_cpus() == (frozenset({1}), frozenset({2, 3}))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(SystemExit, match="two CPUs"):
        split_cpus()
