"""The NAT parts of the front page and the CLI status/peers text."""

from __future__ import annotations

from typing import Any

from p2pstore.base.reports import nat_rows
from p2pstore.web.ui.front import front_page

NAT: dict[str, Any] = {
    "reachability": "private",
    "mode": "auto",
    "observed": "203.0.113.9:4100",
    "nat_type": "cone",
    "dht_mode": "client",
    "answers": 3,
    "reached_by": 0,
    "relays": [{"node_id": "x", "address": "198.51.100.2:3456", "relayed": "198.51.100.2:40001"}],
    "port_mapping": None,
    "hole_punching": True,
    "use_relays": True,
}


def test_front_page_shows_reachability_and_peer_connections() -> None:
    peers = [
        {
            "node_id": "aaaa",
            "address": "198.51.100.2:3456",
            "connected": True,
            "details": {"connection": "direct", "our_relay": True},
        },
        {
            "node_id": "bbbb",
            "address": "203.0.113.7:999",
            "connected": True,
            "details": {"connection": "relayed"},
        },
    ]
    html = front_page({"nat": NAT}, peers, now=0.0, ui_started=0.0)
    assert 'id="h-nat"' in html
    for text in ("private", "203.0.113.9:4100", "cone", "client", "relayed 198.51.100.2:40001"):
        assert text in html
    assert "0 of 3 peers could dial us" in html
    assert "direct (our relay)" in html and "relayed" in html
    # tolerant: odd values never break the page, absent nat means no section
    assert 'id="h-nat"' not in front_page({}, [], now=0.0, ui_started=0.0)
    odd = front_page({"nat": {"relays": "x", "reachability": 3}}, [], now=0.0, ui_started=0.0)
    assert 'id="h-nat"' in odd
    early = front_page({"nat": {"reachability": "unknown"}}, [], now=0.0, ui_started=0.0)
    section = early.split('id="h-nat"')[1].split('id="h-peers"')[0]
    assert "not checked yet" in section and "not reported" not in section


def test_cli_and_shell_status_rows() -> None:
    rows = dict(nat_rows(NAT))  # the CLI's and the shell's status print these rows
    assert rows["reachability"] == "private (mode auto; 0 of 3 peers could dial us)"
    assert rows["DHT mode"] == "client"
    assert rows["relays"] == "198.51.100.2:3456 (relayed 198.51.100.2:40001)"
    assert rows["port mapping"] == "none"
