"""S8 accounts: disable/enable, roles, passwords, and sign-in that neither leaks which user names
exist (argon2 time for unknown users too) nor allows a burst of guesses; all audited."""
import subprocess
import sys
import time

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from sqlalchemy import select

from station.access import accounts
from station.audit.integrity import verify_station
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed
from tests.station_fixture import PASSWORD, sqlite_station_world, station_world  # noqa: F401

NEW_PASSWORD = "another-long-secret"


def _types(w):
    with w.st.db.session() as s:
        return [(e.type, e.actor, e.subject) for e in s.scalars(select(m.AuditEntry).order_by(m.AuditEntry.seq))]


def test_disable_enable_roles_and_passwords_are_admin_actions_and_audited(station_world):
    w = station_world
    st = w.st
    admin = w.user("admin")
    r = w.cli("user", "disable", "wang", "--reason", "调离", user="clerk")
    assert r.returncode == 3 and "admin" in r.stderr
    done = w.cli_json("user", "disable", "wang", "--reason", "调离", user="admin")
    assert done == {"username": "wang", "active": False}
    # a disabled account cannot sign in, even with the right password
    r = w.cli("access", "list", user="wang")
    assert r.returncode == 3 and "wrong user name or password" in r.stderr
    with pytest.raises(Conflict):
        accounts.set_active(st, admin, "wang", False)                  # already disabled
    with pytest.raises(Conflict):
        accounts.set_active(st, admin, "admin", False)                 # the last active administrator
    accounts.set_active(st, admin, "wang", True, reason="返岗")
    assert accounts.authenticate(st, "wang", PASSWORD).username == "wang"

    got = w.cli_json("user", "roles", "li", "--role", "officer", "--role", "clerk", user="admin")
    assert got == {"username": "li", "roles": ["clerk", "officer"]}
    with pytest.raises(NotAllowed):
        accounts.set_roles(st, w.user("chief"), "li", ["officer"])     # not an admin
    with pytest.raises(InvalidInput):
        accounts.set_roles(st, admin, "clerk", ["officer"])            # an officer needs a 警号
    with pytest.raises(InvalidInput):
        accounts.set_roles(st, admin, "clerk", ["boss"])
    with pytest.raises(Conflict):
        accounts.set_roles(st, admin, "admin", ["auditor"])            # the last administrator keeps admin

    # a password: one's own after signing in, anyone's only as admin
    env = {**w.env("wang"), "STATION_NEW_PASSWORD": NEW_PASSWORD}
    r = subprocess.run([sys.executable, "-m", "station", "user", "passwd", "--json"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert accounts.authenticate(st, "wang", NEW_PASSWORD).username == "wang"
    with pytest.raises(NotAllowed):
        accounts.authenticate(st, "wang", PASSWORD)
    with pytest.raises(NotAllowed):
        accounts.set_password(st, w.user("wang"), "li", NEW_PASSWORD)
    with pytest.raises(InvalidInput):
        accounts.set_password(st, admin, "li", "short")
    accounts.set_password(st, admin, "li", NEW_PASSWORD)
    assert accounts.authenticate(st, "li", NEW_PASSWORD).username == "li"

    audit = _types(w)
    for entry in [("user-disable", "admin", "user:wang"), ("user-enable", "admin", "user:wang"),
                  ("user-roles", "admin", "user:li"), ("user-passwd", "wang", "user:wang"),
                  ("user-passwd", "admin", "user:li"), ("sign-in-refused", "wang", "user:wang"),
                  ("not-allowed", "clerk", "disable accounts"), ("not-allowed", "wang", "set the password of li")]:
        assert entry in audit, entry
    assert verify_station(st).ok                                       # every change attested


def _timed_refusal(st, username):
    t = time.perf_counter()
    with pytest.raises(NotAllowed, match="wrong user name or password"):
        accounts.authenticate(st, username, "not-the-password")
    return time.perf_counter() - t


def test_sign_in_costs_the_same_for_unknown_users_and_a_burst_locks_the_name(station_world):
    w = station_world
    st = w.st
    # unknown, disabled and existing names all pay an argon2 verification (no enumeration by timing);
    # without the dummy hash an unknown name is refused in a few milliseconds instead of ~0.2 s
    accounts.set_active(st, w.user("admin"), "deputy", False)
    hasher = PasswordHasher()
    wang_hash = w.user("wang").password_hash
    times: dict[str, list[float]] = {"argon2": [], "unknown": [], "disabled": []}
    for _ in range(3):                       # interleaved, the minimum of each: robust to a loaded machine
        t = time.perf_counter()
        with pytest.raises(VerifyMismatchError):
            hasher.verify(wang_hash, "not-the-password")
        times["argon2"].append(time.perf_counter() - t)
        times["unknown"].append(_timed_refusal(st, "ghost"))
        times["disabled"].append(_timed_refusal(st, "deputy"))
    floor = min(times["argon2"])             # one argon2id verification with the account's parameters
    assert min(times["unknown"]) > 0.7 * floor and min(times["disabled"]) > 0.7 * floor, times
    with st.db.session() as s:
        ghost = s.scalars(select(m.AuditEntry).where(m.AuditEntry.subject == "user:ghost")).all()
    assert [(e.type, e.actor) for e in ghost] == [("sign-in-refused", "unknown")] * 3

    # a burst: after 5 refusals within 15 minutes the name is locked, the right password included
    w.clock.advance(NS_PER_HOUR)
    for _ in range(accounts.FAILURE_LIMIT):
        _timed_refusal(st, "li")
    with pytest.raises(NotAllowed, match="too many failed sign-ins"):
        accounts.authenticate(st, "li", PASSWORD)
    for _ in range(accounts.FAILURE_LIMIT):  # an unknown name behaves the same (and says the same)
        _timed_refusal(st, "ghost")
    with pytest.raises(NotAllowed, match="too many failed sign-ins"):
        accounts.authenticate(st, "ghost", PASSWORD)
    assert accounts.authenticate(st, "wang", PASSWORD).username == "wang"       # other names unaffected
    w.clock.advance(accounts.FAILURE_WINDOW_NS)
    assert accounts.authenticate(st, "li", PASSWORD).username == "li"
    locked = [t for t in _types(w) if t[0] == "sign-in-locked"]
    assert locked == [("sign-in-locked", "li", "user:li"), ("sign-in-locked", "unknown", "user:ghost")]
