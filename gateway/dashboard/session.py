"""Dashboard sessions, CSRF tokens and the sign-in budget.

- **Sessions** are kept server-side, in this process: the cookie carries a random id (256 bits),
  the table is keyed by its SHA-256 (the id itself is not kept), bounded to :data:`MAX_SESSIONS`
  (the least recently used goes first) and each session ends after :data:`IDLE_SECONDS` without
  a request or :data:`ABSOLUTE_SECONDS` after sign-in, whichever is first. A session also ends
  when the admin token changes (a reload): it remembers a keyed hash of the token it was opened
  with. A restart ends every session. The admin listener is one process (with ``workers: N``
  the supervisor serves it), so in-process sessions are enough.
- **CSRF**: every session has a random token, put in a hidden field of every form and compared
  in constant time on every POST. The sign-in form, before any session exists, uses a
  double-submit pair (a random value in a cookie and in the form). Besides, a POST whose
  ``Origin`` is present and is not the admin listener's own, or whose ``Sec-Fetch-Site`` says it
  came from another site, is refused before anything else is read.
- **Sign-in budget**: at most :data:`FAILURES_PER_ADDRESS` failed sign-ins per client address
  and :data:`FAILURES_OVERALL` in all per :data:`FAILURE_WINDOW` seconds; past either, a sign-in
  is refused (429) before the token is compared. A successful sign-in clears its address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from multidict import CIMultiDictProxy

IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 8 * 3600
MAX_SESSIONS = 64
FAILURES_PER_ADDRESS = 5
FAILURES_OVERALL = 30
FAILURE_WINDOW = 60.0
MAX_TRACKED_ADDRESSES = 1024

SESSION_COOKIE = "gw_dashboard"
SIGN_IN_COOKIE = "gw_dashboard_signin"
COOKIE_PATH = "/dashboard"
_ID_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def new_secret() -> str:
    """32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def well_formed(value: str) -> bool:
    """A value :func:`new_secret` could have made (anything else is not looked up)."""
    return len(value) == 43 and set(value) <= _ID_ALPHABET


def same(presented: str, expected: str) -> bool:
    """Constant-time equality of a presented secret with the expected one. Either may hold
    lone surrogates (aiohttp decodes a header's non-UTF-8 bytes to them): each is compared as
    its bytes, never raising."""
    # SECURITY: constant time: the comparison does not tell how much of a guess was right.
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


@dataclass(slots=True)
class Session:
    """One signed-in browser. ``handle`` names it in logs (a hash prefix, not the id)."""

    csrf: str
    token_tag: bytes
    created: float
    seen: float
    handle: str
    # A key secret created or rotated by this session, shown once on the next page, then gone.
    flash_secret: tuple[str, str] | None = None
    flash: list[tuple[str, str]] = field(default_factory=list)


class Sessions:
    """The server-side session table of one admin listener."""

    def __init__(self) -> None:
        self._table: OrderedDict[str, Session] = OrderedDict()
        # Keys the admin token's hash; a per-process secret, so the hash means nothing outside.
        self._tag_key = secrets.token_bytes(32)

    def token_tag(self, admin_token: str) -> bytes:
        return hmac.new(self._tag_key, admin_token.encode(), hashlib.sha256).digest()

    def open(self, admin_token: str, now: float) -> tuple[str, Session]:
        """A new session for a browser that just presented ``admin_token``: (cookie value,
        session). Ends the oldest session when the table is full."""
        self._expire(now)
        # SECURITY: bounded: the oldest session goes first.
        while len(self._table) >= MAX_SESSIONS:
            self._table.popitem(last=False)
        session_id = new_secret()  # SECURITY: a fresh id at every sign-in (no fixation).
        digest = _digest(session_id)
        session = Session(
            csrf=new_secret(),
            token_tag=self.token_tag(admin_token),
            created=now,
            seen=now,
            handle=digest[:12],
        )
        self._table[digest] = session
        return session_id, session

    def get(self, session_id: str, admin_token: str, now: float) -> Session | None:
        """The live session with this cookie value, its idle clock restarted; ``None`` when
        there is none, it expired, or it was opened with another admin token."""
        if not well_formed(session_id):
            return None
        digest = _digest(session_id)
        session = self._table.get(digest)
        if session is None:
            return None
        # SECURITY: an expired session, or one opened with a replaced admin token, is gone.
        # (A plain comparison: both tags are the server's own; no request chooses either.)
        if _expired(session, now) or session.token_tag != self.token_tag(admin_token):
            del self._table[digest]
            return None
        session.seen = now
        self._table.move_to_end(digest)
        return session

    def close(self, session_id: str) -> None:
        if well_formed(session_id):
            self._table.pop(_digest(session_id), None)

    def __len__(self) -> int:
        return len(self._table)

    def _expire(self, now: float) -> None:
        for digest in [d for d, s in self._table.items() if _expired(s, now)]:
            del self._table[digest]


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _expired(session: Session, now: float) -> bool:
    # SECURITY: the idle and the absolute bound both end a session.
    return now - session.seen >= IDLE_SECONDS or now - session.created >= ABSOLUTE_SECONDS


class SignInBudget:
    """Failed sign-ins per client address and overall, in a sliding window."""

    def __init__(self) -> None:
        self._by_address: OrderedDict[str, deque[float]] = OrderedDict()
        self._overall: deque[float] = deque()

    def retry_after(self, address: str, now: float) -> float:
        """0 when a sign-in from ``address`` may be tried now, else the seconds to wait."""
        waits = [0.0]
        overall = _trim(self._overall, now)
        if len(overall) >= FAILURES_OVERALL:
            waits.append(overall[0] + FAILURE_WINDOW - now)
        mine = self._by_address.get(address)
        if mine is not None and len(_trim(mine, now)) >= FAILURES_PER_ADDRESS:
            waits.append(mine[0] + FAILURE_WINDOW - now)
        return max(waits)

    def failed(self, address: str, now: float) -> None:
        self._overall.append(now)
        mine = self._by_address.pop(address, None) or deque()
        mine.append(now)
        self._by_address[address] = mine
        while len(self._by_address) > MAX_TRACKED_ADDRESSES:
            self._by_address.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)


def _trim(times: deque[float], now: float) -> deque[float]:
    while times and times[0] <= now - FAILURE_WINDOW:
        times.popleft()
    return times


def cross_site(headers: CIMultiDictProxy[str], own_origin: str) -> bool:
    """Whether a POST comes from a page that is not the dashboard's own: an ``Origin`` other
    than ``own_origin`` (``null`` included), or a ``Sec-Fetch-Site`` other than ``same-origin``.
    Browsers send at least one of them on every form POST; a client that sends neither is not a
    browser, and still needs the session cookie and the CSRF token."""
    origin = headers.get("Origin")
    # SECURITY: another origin's page (or a "null" one) is not the dashboard.
    if origin is not None and origin.lower() != own_origin.lower():
        return True
    fetch_site = headers.get("Sec-Fetch-Site")
    # SECURITY: the browser's own word on where the form came from; "same-site" is another
    # port or subdomain of this host, still not the dashboard.
    return fetch_site is not None and fetch_site != "same-origin"
