"""Browser sessions for the web UI, sans-I/O: one-time login tickets, session
records with a CSRF token, and the same-origin check for forms.

How a browser gets in (docs/web-ui.md): ``p2pstore web-url`` asks the node (with
the API token) for a **ticket** and prints ``http://127.0.0.1:<port>/login/<ticket>``;
opening it redeems the ticket and sets a session cookie. Or the user pastes the
API token into the login form.

Invariants:
- tickets are random (32 bytes), single-use, live :attr:`SessionStore.ticket_ttl`
  seconds, and at most :attr:`SessionStore.max_tickets` are outstanding (the
  oldest is dropped);
- session ids are random (32 bytes) and stored only as their SHA-256 (a dump of
  the store reveals no usable cookie); a session ends after ``idle_ttl`` without
  use or ``max_age`` after login; at most ``max_sessions`` live (the least
  recently used is dropped);
- each session has its own random CSRF token, compared in constant time;
- a session holds the mutable caps its browser opened (at most :data:`MAX_CAPS`,
  the least recently used dropped) under random **handles**, so the pages of a
  mutable file are ``/mutable/<handle>``: no URL holds a cap, and a handle means
  nothing outside its session;
- nothing here reads a clock directly: ``clock`` is injected.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

TICKET_BYTES: Final = 32
SESSION_BYTES: Final = 32
MAX_FLASH: Final = 8
MAX_SECRET_CHARS: Final = 128  # longer presented tickets/ids are refused unhashed
MAX_CAPS: Final = 64
HANDLE_BYTES: Final = 12


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "replace")).digest()


@dataclass
class Session:
    """One logged-in browser. ``flash``: messages shown on the next page."""

    csrf: str
    created: float
    last_used: float
    flash: list[str] = field(default_factory=list)
    #: handle -> (mutable cap, label: the file name it was made from, or "")
    caps: OrderedDict[str, tuple[str, str]] = field(default_factory=OrderedDict)

    def __repr__(self) -> str:  # keep the CSRF token out of logs
        return f"Session(created={self.created:.0f}, last_used={self.last_used:.0f})"

    def check_csrf(self, given: str | None) -> bool:
        if not given or len(given) > MAX_SECRET_CHARS:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.csrf.encode())

    def add_flash(self, message: str) -> None:
        self.flash.append(message[:500])
        del self.flash[:-MAX_FLASH]

    def take_flash(self) -> list[str]:
        out, self.flash = self.flash, []
        return out

    def remember_cap(self, cap: str, label: str = "") -> str:
        """The handle of ``cap`` in this session (the same cap keeps its handle)."""
        for handle, (known, old) in self.caps.items():
            if known == cap:
                self.caps[handle] = (cap, label[:255] or old)
                self.caps.move_to_end(handle)
                return handle
        handle = secrets.token_urlsafe(HANDLE_BYTES)
        self.caps[handle] = (cap, label[:255])
        while len(self.caps) > MAX_CAPS:
            self.caps.popitem(last=False)
        return handle

    def cap_of(self, handle: str) -> tuple[str, str] | None:
        """(cap, label) of a handle this session made, else None."""
        if len(handle) > MAX_SECRET_CHARS:
            return None
        return self.caps.get(handle)


class SessionStore:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        ticket_ttl: float = 120.0,
        idle_ttl: float = 12 * 3600.0,
        max_age: float = 7 * 24 * 3600.0,
        max_sessions: int = 64,
        max_tickets: int = 16,
    ) -> None:
        self.clock = clock
        self.ticket_ttl = ticket_ttl
        self.idle_ttl = idle_ttl
        self.max_age = max_age
        self.max_sessions = max_sessions
        self.max_tickets = max_tickets
        self._tickets: OrderedDict[bytes, float] = OrderedDict()  # digest -> expiry
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()  # digest -> session

    def __repr__(self) -> str:
        return f"SessionStore({len(self._sessions)} sessions, {len(self._tickets)} tickets)"

    def __len__(self) -> int:
        return len(self._sessions)

    # -- tickets ---------------------------------------------------------------------
    def new_ticket(self) -> str:
        self._drop_expired_tickets()
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        self._tickets[_digest(ticket)] = self.clock() + self.ticket_ttl
        while len(self._tickets) > self.max_tickets:
            self._tickets.popitem(last=False)
        return ticket

    def redeem_ticket(self, ticket: str) -> tuple[str, Session] | None:
        """A new session for a valid unused ticket (which is then spent), else None."""
        if not ticket or len(ticket) > MAX_SECRET_CHARS:
            return None
        self._drop_expired_tickets()
        expiry = self._tickets.pop(_digest(ticket), None)
        if expiry is None:
            return None
        return self.new_session()

    def _drop_expired_tickets(self) -> None:
        now = self.clock()
        for key in [k for k, exp in self._tickets.items() if exp <= now]:
            del self._tickets[key]

    # -- sessions --------------------------------------------------------------------
    def new_session(self) -> tuple[str, Session]:
        """A fresh session and its id (the cookie value)."""
        now = self.clock()
        sid = secrets.token_urlsafe(SESSION_BYTES)
        session = Session(csrf=secrets.token_urlsafe(24), created=now, last_used=now)
        self._sessions[_digest(sid)] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session for a cookie value (and mark it used), else None."""
        if not sid or len(sid) > MAX_SECRET_CHARS:
            return None
        key = _digest(sid)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self.clock()
        if now - session.last_used > self.idle_ttl or now - session.created > self.max_age:
            del self._sessions[key]
            return None
        session.last_used = now
        self._sessions.move_to_end(key)
        return session

    def end(self, sid: str | None) -> None:
        if sid and len(sid) <= MAX_SECRET_CHARS:
            self._sessions.pop(_digest(sid), None)


def same_origin(
    *, host: str, origin: str | None, fetch_site: str | None, referer: str | None = None
) -> bool:
    """Whether a form submission comes from this UI's own pages.

    ``Sec-Fetch-Site`` (sent by current browsers) must be ``same-origin`` or
    ``none`` (user-initiated); ``Origin``, when sent, must be ``http://<Host>``
    or ``null`` — browsers send ``null`` for form posts from pages with
    ``Referrer-Policy: no-referrer``, which ours are. A request carrying neither
    (an old browser, a script) passes this check and relies on the session's
    CSRF token alone. ``Referer`` is only checked when present without ``Origin``.
    """
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return False
    expected = f"http://{host}".lower()
    if origin is not None:
        value = origin.strip().lower()
        return value == expected or value == "null"
    if referer is not None:
        ref = referer.strip().lower()
        return ref == expected or ref.startswith(expected + "/")
    return True
