"""Local accounts with roles and argon2id password hashes (argon2-cffi), and the role check.

Roles (any combination): officer (民警: wears a device, labels own recordings), clerk
(evidence clerk: ingest, labels, cases, exports), approver (supervisor: approves access,
signs off not-recording reasons), auditor (reads the audit trail, runs verify), admin
(accounts, devices, retention, purge confirmation).
"""
from __future__ import annotations

import re
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select

from station.app import Station
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound

ROLES = ("officer", "clerk", "approver", "auditor", "admin")
ROLE_ZH = {"officer": "执法人员", "clerk": "证据管理员", "approver": "审批人", "auditor": "审计员",
           "admin": "系统管理员"}
MIN_PASSWORD = 10
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_hasher = PasswordHasher()


def roles_of(user: m.User) -> set[str]:
    return {r for r in user.roles.split(",") if r}


def has_role(user: m.User, *roles: str) -> bool:
    return bool(roles_of(user) & set(roles))


def require_role(st: Station, user: m.User, *roles: str, what: str) -> None:
    """NotAllowed (and an ``not-allowed`` audit record) unless ``user`` has one of ``roles``."""
    if not has_role(user, *roles):
        st.trail.event("not-allowed", actor=user.username, subject=what,
                       reason=f"needs role {' or '.join(roles)}")
        raise NotAllowed(f"{user.username} may not {what} (needs the role {' or '.join(roles)})")


def create_user(st: Station, actor: str | None, username: str, password: str, roles: list[str], *,
                display_name: str = "", officer_no: str | None = None, unit: str = "",
                supervisor: str | None = None) -> m.User:
    """Add an account. ``actor`` None only for the first account (an administrator) of a station."""
    if not _USERNAME.match(username):
        raise InvalidInput(f"user name {username!r}: 2-64 of a-z 0-9 . _ - (starting with a letter or digit)")
    bad = sorted(set(roles) - set(ROLES))
    if bad or not roles:
        raise InvalidInput(f"roles must be some of {', '.join(ROLES)}; got {', '.join(roles) or 'none'}")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")
    if "officer" in roles and not officer_no:
        raise InvalidInput("an officer account needs the officer number (警号, --officer-no)")
    with st.trail.action("user-create", actor=actor or username, subject=f"user:{username}",
                         roles=sorted(roles), officer_no=officer_no) as ch:
        s = ch.session
        count = s.scalar(select(func.count()).select_from(m.User)) or 0
        if actor is None and count:
            raise NotAllowed("only the first account may be created without signing in as an administrator")
        if actor is None and "admin" not in roles:
            raise InvalidInput("the first account must be an administrator (--role admin)")
        if actor is not None:
            who = s.get(m.User, actor)
            if who is None or not has_role(who, "admin"):
                raise NotAllowed(f"{actor} may not create accounts (needs the role admin)")
        if s.get(m.User, username) is not None:
            raise Conflict(f"user {username} exists")
        if officer_no and s.scalars(select(m.User).where(m.User.officer_no == officer_no)).first():
            raise Conflict(f"officer number {officer_no} belongs to another account")
        if supervisor and s.get(m.User, supervisor) is None:
            raise NotFound(f"no user {supervisor} (supervisor)")
        user = m.User(username=username, display_name=display_name or username, officer_no=officer_no,
                      unit=unit, roles=",".join(sorted(roles)), supervisor=supervisor,
                      password_hash=_hasher.hash(password), active=True, created_ns=st.now_ns())
        ch.add(user)
    return user


# A hash of a random password nobody knows, with the hasher's parameters: a sign-in as an
# unknown or disabled user is checked against it, so every refusal costs the same argon2 time
# and the response time does not tell which user names exist.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$MXP4aoaYtgwJSHdtaz+NMQ$0V+qEPuWN4+7uKbHTjsodRj878g+p9purN0XgwfayMQ"
# A burst of wrong passwords locks the user name (existing or not) for a while.
FAILURE_LIMIT = 5
FAILURE_WINDOW_NS = 15 * 60 * 10**9
SIGN_IN_REFUSED = "sign-in-refused"


def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def recent_failures(st: Station, username: str) -> tuple[int, int | None]:
    """How many sign-ins as ``username`` were refused within the last ``FAILURE_WINDOW_NS`` (any
    station of this catalogue), and when the oldest of them leaves the window."""
    since = st.now_ns() - FAILURE_WINDOW_NS
    with st.db.session() as s:
        times = sorted(s.scalars(select(m.AuditEntry.wall_ns).where(
            m.AuditEntry.subject == f"user:{username}", m.AuditEntry.type == SIGN_IN_REFUSED,
            m.AuditEntry.wall_ns > since)))
    if len(times) < FAILURE_LIMIT:
        return len(times), None
    return len(times), times[-FAILURE_LIMIT] + FAILURE_WINDOW_NS


def authenticate(st: Station, username: str, password: str) -> m.User:
    """The active account whose password this is; NotAllowed otherwise (the failure is audited).

    Unknown and disabled accounts are checked against a dummy hash (same argon2 cost: no
    user-name enumeration by timing); after ``FAILURE_LIMIT`` refusals within
    ``FAILURE_WINDOW_NS`` the name is locked until the oldest of them is that old (audited
    ``sign-in-locked``, not counted as a further failure), whatever the password.
    """
    with st.db.session() as s:
        user = s.get(m.User, username)
    usable = user is not None and user.active
    ok = _password_matches(user.password_hash if user is not None and usable else _DUMMY_HASH, password)
    ok = ok and usable
    failures, locked_until = recent_failures(st, username)
    actor = username if user is not None else "unknown"
    if locked_until is not None:
        st.trail.event("sign-in-locked", actor=actor, subject=f"user:{username}",
                       reason=f"{failures} wrong passwords within {FAILURE_WINDOW_NS // 60 // 10**9} minutes",
                       locked_until_ns=locked_until)
        raise NotAllowed(f"too many failed sign-ins as {username}: try again in "
                         f"{max(1, -(-(locked_until - st.now_ns()) // (60 * 10**9)))} minute(s)")
    if not ok or user is None:
        st.trail.event(SIGN_IN_REFUSED, actor=actor, subject=f"user:{username}",
                       reason="wrong user name or password")
        raise NotAllowed("wrong user name or password")
    return user


def _admin_action_checks(s: Any, actor: m.User, username: str) -> m.User:
    who = s.get(m.User, actor.username)
    if who is None or not who.active or not has_role(who, "admin"):
        raise NotAllowed(f"{actor.username} may not change accounts (needs the role admin)")
    target = s.get(m.User, username, with_for_update=True)
    if target is None:
        raise NotFound(f"no user {username}")
    return cast(m.User, target)


def _other_active_admins(s: Any, username: str) -> int:
    return sum(1 for u in s.scalars(select(m.User).where(m.User.active.is_(True), m.User.username != username))
               if has_role(u, "admin"))


def set_password(st: Station, actor: m.User, username: str, new_password: str) -> None:
    """Change a password: one's own (after signing in with the old one), or anyone's as an admin.
    Every open web session of the account ends in the same action: a password is changed because
    the old one may be known, and a session opened with it must not outlive it."""
    if actor.username != username:
        require_role(st, actor, "admin", what=f"set the password of {username}")
    if len(new_password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")
    with st.trail.action("user-passwd", actor=actor.username, subject=f"user:{username}",
                         own=actor.username == username) as ch:
        target = ch.session.get(m.User, username, with_for_update=True)
        if target is None:
            raise NotFound(f"no user {username}")
        if _password_matches(target.password_hash, new_password):
            raise InvalidInput("the new password is the old one")
        target.password_hash = _hasher.hash(new_password)
        ch.touch(target)
        now = st.now_ns()
        ended = 0
        for row in ch.session.scalars(select(m.WebSession).where(m.WebSession.username == username,
                                                                 m.WebSession.ended_ns.is_(None))):
            row.ended_ns = now
            ended += 1
        ch.details["web_sessions_ended"] = ended


def set_active(st: Station, actor: m.User, username: str, active: bool, *, reason: str | None = None) -> m.User:
    """Disable (no sign-in any more; history kept) or enable an account. Admin only; the last
    active administrator cannot be disabled."""
    verb = "enable" if active else "disable"
    require_role(st, actor, "admin", what=f"{verb} accounts")
    with st.trail.action(f"user-{verb}", actor=actor.username, subject=f"user:{username}", reason=reason) as ch:
        target = _admin_action_checks(ch.session, actor, username)
        if target.active == active:
            raise Conflict(f"{username} is already {verb}d")
        if not active and has_role(target, "admin") and not _other_active_admins(ch.session, username):
            raise Conflict(f"{username} is the last active administrator")
        target.active = active
        ch.touch(target)
    return target


def set_roles(st: Station, actor: m.User, username: str, roles: list[str]) -> m.User:
    """Replace an account's roles (admin only, audited with the roles before and after)."""
    require_role(st, actor, "admin", what="change roles")
    bad = sorted(set(roles) - set(ROLES))
    if bad or not roles:
        raise InvalidInput(f"roles must be some of {', '.join(ROLES)}; got {', '.join(roles) or 'none'}")
    with st.trail.action("user-roles", actor=actor.username, subject=f"user:{username}",
                         roles=sorted(set(roles))) as ch:
        target = _admin_action_checks(ch.session, actor, username)
        before = sorted(roles_of(target))
        ch.details["before"] = before
        if before == sorted(set(roles)):
            raise Conflict(f"{username} already has the roles {', '.join(before)}")
        if "officer" in roles and not target.officer_no:
            raise InvalidInput(f"{username} has no officer number (警号): an officer account needs one")
        if "admin" in before and "admin" not in roles and target.active and \
                not _other_active_admins(ch.session, username):
            raise Conflict(f"{username} is the last active administrator")
        target.roles = ",".join(sorted(set(roles)))
        ch.touch(target)
    return target


def get_user(st: Station, username: str) -> m.User:
    with st.db.session() as s:
        user = s.get(m.User, username)
    if user is None:
        raise NotFound(f"no user {username}")
    return user
