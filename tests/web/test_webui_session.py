"""Web UI sessions, tickets, CSRF and origin checks, and the HTML helpers (sans-I/O)."""

from __future__ import annotations

import urllib.parse

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.app.vpath import parse_vpath
from p2pstore.web.ui.front import front_page
from p2pstore.web.ui.html import dir_url, entry_url, esc, file_url, fmt_bytes, safe_next
from p2pstore.web.ui.pages import guess_type, inline_type
from p2pstore.web.ui.session import SessionStore, same_origin

from ..webui_helpers import NOW, grid_service_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ticket_is_single_use_and_expires() -> None:
    clock = Clock()
    store = SessionStore(clock, ticket_ttl=60)
    t = store.new_ticket()
    made = store.redeem_ticket(t)
    assert made is not None
    sid, session = made
    assert store.get(sid) is session
    assert store.redeem_ticket(t) is None  # spent
    t2 = store.new_ticket()
    clock.now += 61
    assert store.redeem_ticket(t2) is None  # expired
    assert store.redeem_ticket("") is None
    assert store.redeem_ticket("x" * 10_000) is None


def test_outstanding_tickets_are_bounded() -> None:
    store = SessionStore(Clock(), max_tickets=3)
    tickets = [store.new_ticket() for _ in range(5)]
    assert store.redeem_ticket(tickets[0]) is None  # dropped, oldest first
    assert store.redeem_ticket(tickets[1]) is None
    assert all(store.redeem_ticket(t) is not None for t in tickets[2:])


def test_sessions_expire_when_idle_or_old_and_are_bounded() -> None:
    clock = Clock()
    store = SessionStore(clock, idle_ttl=100, max_age=250, max_sessions=2)
    sid, _ = store.new_session()
    clock.now += 90
    assert store.get(sid) is not None  # used: idle timer restarts
    clock.now += 90
    assert store.get(sid) is not None
    clock.now += 90  # 270 s after login: past max_age
    assert store.get(sid) is None
    a, _ = store.new_session()
    clock.now += 101
    assert store.get(a) is None  # idle too long
    s1, _ = store.new_session()
    s2, _ = store.new_session()
    assert store.get(s1) is not None  # s1 now most recently used
    s3, _ = store.new_session()
    assert store.get(s2) is None and store.get(s1) is not None and store.get(s3) is not None
    store.end(s1)
    assert store.get(s1) is None
    assert store.get(None) is None and store.get("nope") is None


def test_csrf_and_flash() -> None:
    store = SessionStore(Clock())
    _, s = store.new_session()
    assert s.check_csrf(s.csrf)
    assert not s.check_csrf(s.csrf + "x")
    assert not s.check_csrf(None) and not s.check_csrf("")
    assert s.csrf not in repr(s)
    for i in range(20):
        s.add_flash(f"m{i}")
    assert s.take_flash() == [f"m{i}" for i in range(12, 20)]
    assert s.take_flash() == []


def test_same_origin_matrix() -> None:
    host = "127.0.0.1:8080"
    ok = dict(host=host)
    assert same_origin(**ok, origin="http://127.0.0.1:8080", fetch_site="same-origin")
    assert same_origin(**ok, origin="null", fetch_site="same-origin")  # no-referrer pages
    assert same_origin(**ok, origin=None, fetch_site=None)  # scripts: CSRF token decides
    assert not same_origin(**ok, origin="http://evil.example", fetch_site=None)
    assert not same_origin(**ok, origin="http://127.0.0.1:9999", fetch_site=None)  # other node
    assert not same_origin(**ok, origin=None, fetch_site="cross-site")
    assert not same_origin(**ok, origin=None, fetch_site="same-site")
    assert not same_origin(**ok, origin=None, fetch_site=None, referer="http://evil/x")
    assert same_origin(**ok, origin=None, fetch_site=None, referer="http://127.0.0.1:8080/d/")


@given(st.text(max_size=80))
def test_safe_next_is_always_a_local_path(value: str) -> None:
    out = safe_next(value)
    assert out.startswith("/") and not out.startswith("//") and "\\" not in out
    parsed = urllib.parse.urlsplit(out)
    assert not parsed.scheme and not parsed.netloc


def test_urls_quote_names_and_never_hold_caps() -> None:
    p = parse_vpath("shared:/a b/c?d#e%f")
    assert dir_url(p) == "/drive/shared/a%20b/c%3Fd%23e%25f/"
    assert file_url(p) == "/drive/shared/a%20b/c%3Fd%23e%25f"
    assert file_url(p, download=True).endswith("?download=1")
    assert entry_url(parse_vpath("private:/x")) == "/entry/private/x"
    assert dir_url(parse_vpath("private:/")) == "/drive/private/"


def test_types_and_formatting() -> None:
    assert guess_type("a.mp4") == "video/mp4"
    assert guess_type("noext") == "application/octet-stream"
    assert inline_type("x.html") == "text/plain; charset=utf-8"  # never rendered
    assert inline_type("x.svg") == "text/plain; charset=utf-8"
    assert inline_type("a.png") == "image/png"
    assert inline_type("a.bin") is None
    assert fmt_bytes(512) == "512 B" and "KiB" in fmt_bytes(2048)
    assert "not reported" in fmt_bytes(None) and "not reported" in fmt_bytes(True)
    assert esc('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;"


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "node_id",
                "nickname",
                "uptime",
                "started_at",
                "listen_host",
                "listen_port",
                "seeds",
                "dht",
                "storage",
                "storage_used",
                "storage_quota",
                "transfers",
                "recent_transfers",
                "peers_known",
                "introducer",
                "memory_store",
            ]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=10), inner, max_size=3)
            ),
            max_leaves=8,
        ),
    )
)
def test_front_page_never_fails_on_odd_status(status: dict[str, object]) -> None:
    """Whatever a backend reports, the front page renders (missing/odd fields shown
    as 'not reported'), and text is escaped."""
    out = front_page(status, [], now=2000.0, ui_started=1000.0)
    assert "<script" not in out


def test_front_page_reads_the_grid_services_status_shape() -> None:
    out = front_page(grid_service_status(), [], now=NOW, ui_started=NOW - 5)
    for text in (
        "bob",
        "127.0.0.1:5555",
        "Last join: 2 reached, 1 failed",
        "3 contacts in 2 buckets",
        "DHT records held",
        "4.0 KiB",
        "1.0 GiB",
        "17",
        "2 connected, 3 known",
    ):
        assert text in out, text
