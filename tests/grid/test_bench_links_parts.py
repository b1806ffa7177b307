"""The pure parts of the shaped-link benchmarks: the physical limits every figure is set
beside, and how the Tahoe-LAFS comparison reads its nodes' pages (the runs themselves
need root and Tahoe: ``make bench-links``, ``make bench-links-tahoe``)."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.bench_links import idle_cpu, limits
from benchmarks.bench_links_tahoe import connected_servers, helper_connected


def test_limits_are_bytes_over_the_link() -> None:
    up, helper, down = limits(100 << 20, 20, 100, 3, 10)
    # 100 MiB x 10/3 over 2.5 MB/s; 100 MiB over 2.5 MB/s; 100 MiB over 12.5 MB/s
    assert up == pytest.approx(139.81, abs=0.01)
    assert helper == pytest.approx(41.94, abs=0.01)
    assert down == pytest.approx(8.39, abs=0.01)
    # a helper upload's limit does not depend on the encoding, a direct one's does
    up_1of1, helper_1of1, _ = limits(100 << 20, 20, 100, 1, 1)
    assert helper_1of1 == helper and up_1of1 == pytest.approx(helper)


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
