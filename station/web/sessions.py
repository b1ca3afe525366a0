"""Sign-in sessions of the web interface: a random cookie, its SHA-256 in the catalogue, CSRF per session.

The cookie (``station_session``) is HttpOnly, Secure, SameSite=Strict; the catalogue keeps
only its hash, so a copy of the database signs no one in. A session ends at sign-out, after
``[web] session_idle_minutes`` unused, or ``session_max_hours`` after sign-in. Every form
carries the session's CSRF token (the sign-in form a cookie-bound one) and a POST without
the right one is refused.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from station.access.accounts import authenticate
from station.app import Station
from station.db import models as m

COOKIE = "station_session"
LOGIN_CSRF_COOKIE = "station_login_csrf"
NS_PER_MINUTE = 60 * 10**9
TOUCH_NS = NS_PER_MINUTE      # a session's last use is written at most once a minute


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True)
class SignedIn:
    user: m.User
    csrf: str
    token_sha256: str


def sign_in(st: Station, username: str, password: str) -> tuple[str, SignedIn]:
    """Check the password (NotAllowed, audited, if wrong) and open a session; returns (cookie, session)."""
    user = authenticate(st, username, password)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    now = st.now_ns()
    with st.db.session(write=True) as s:
        s.add(m.WebSession(token_sha256=_digest(token), username=user.username, csrf=csrf, created_ns=now,
                           last_seen_ns=now))
    st.trail.event("sign-in", actor=user.username, subject=f"user:{user.username}", via="web")
    return token, SignedIn(user, csrf, _digest(token))


def current(st: Station, token: str | None) -> SignedIn | None:
    """The live session of this cookie (and touch it), or None: unknown, ended, idle or too old.

    A read, and a write only to end the session or when its last use is more than ``TOUCH_NS``
    old: a page costs no write transaction (the idle limit is kept to within that minute)."""
    if not token:
        return None
    now = st.now_ns()
    web = st.cfg.web
    digest = _digest(token)
    with st.db.session() as s:
        row = s.get(m.WebSession, digest)
        if row is None or row.ended_ns is not None:
            return None
        user = s.get(m.User, row.username)
        idle = now - row.last_seen_ns > web.session_idle_minutes * NS_PER_MINUTE
        old = now - row.created_ns > web.session_max_hours * 60 * NS_PER_MINUTE
        live = not (idle or old) and user is not None and user.active
        csrf, last_seen = row.csrf, row.last_seen_ns
    if live and now - last_seen <= TOUCH_NS:
        assert user is not None
        return SignedIn(user, csrf, digest)
    with st.db.session(write=True) as s:
        row = s.get(m.WebSession, digest)
        if row is None or row.ended_ns is not None:
            return None
        if not live:
            row.ended_ns = now
            return None
        row.last_seen_ns = max(row.last_seen_ns, now)
    assert user is not None
    return SignedIn(user, csrf, digest)


def sign_out(st: Station, who: SignedIn) -> None:
    with st.db.session(write=True) as s:
        row = s.get(m.WebSession, who.token_sha256)
        if row is not None and row.ended_ns is None:
            row.ended_ns = st.now_ns()
    st.trail.event("sign-out", actor=who.user.username, subject=f"user:{who.user.username}", via="web")


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
