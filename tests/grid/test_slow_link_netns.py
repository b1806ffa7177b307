"""An upload over a slow, shaped home uplink succeeds, end to end (``make test-slow``).

Real node processes in two network namespaces joined by a ``tc tbf``-shaped link
(20 Mbit/s up with a 500 ms router queue, 100 Mbit/s down), 10 storage nodes on
the fast side: the shaped-link benchmark (benchmarks/bench_links.py) at 10 MiB.
Before 2026-12-05 every such upload failed (IP fragments lost in the router's
queue, the stall rule and aioquic's buffering; docs/grid.md, "Over a home link").
Needs root, iproute2 and tc: skipped with the reason where namespaces cannot be
made.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_links
from tests.netns import netns_unavailable

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(600)]


def test_ten_mib_over_a_twenty_mbit_uplink(capsys: pytest.CaptureFixture[str]) -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    rc = bench_links.main(["--mib", "10"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    doc = json.loads(line)
    assert rc == 0, doc
    assert doc["bytes_match"] is True
    # within 1.5x of what the link can carry at all (measured: 1.09x)
    assert doc["put_over_limit"] < 1.5, doc
