"""Security of the web interface, route by route: httpx (and raw HTTP) against the real HTTPS server.

The routes are enumerated from the application itself (``web.app.routes``), so a new page is
covered the day it is added; ``ROUTE_RULES`` says who may reach each one, and a route missing
from it fails the test until someone reviews it and adds its line. For every route:

* without a session (none, forged, signed out): the sign-in page (303) or 401/403, never content;
* every POST without this session's CSRF token (none, empty, another session's): 403 and a
  ``csrf-refused`` audit record, nothing else written;
* every signed-in role against every route it may not reach: 403 and an audit record
  (``not-allowed``, or the S8 ``view-refused`` for playing), and every role it may reach: not 403;
* every file-serving route against path traversal (``..``, ``%2e%2e``, double encoding,
  backslashes, absolute paths, a symlink): 403/404/422 and never a byte of a file outside;
* an officer guessing another officer's recording ids gets no playlist and no segment, until an
  approver grants him a view.
"""
from __future__ import annotations

import os
import re
import secrets
import socket
import ssl
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
from fastapi.routing import APIRoute
from sqlalchemy import func, select
from starlette.routing import Mount

from station.access.accounts import ROLES
from station.access.requests import approve, request_access
from station.db import models as m
from station.web.guard import HERE
from tests.station_fixture import sqlite_station_world  # noqa: F401
from tests.web_fixture import http_sign_in, web  # noqa: F401

USER_OF = {"officer": "wang", "clerk": "clerk", "approver": "chief", "auditor": "auditor", "admin": "admin"}
assert set(USER_OF) == set(ROLES)
ALL = frozenset(ROLES)
STAFF = frozenset({"clerk", "approver", "auditor", "admin"})
READERS = frozenset({"auditor", "admin"})


@dataclass(frozen=True)
class Rule:
    """Who may reach a route. ``roles`` None: public (no session needed). ``refusal``: the audit
    record a refused role leaves. ``files``: it serves files or downloads (path traversal tried)."""

    roles: frozenset[str] | None
    refusal: str = "not-allowed"
    files: bool = False


PUBLIC = Rule(None)
# (method, path) -> who may reach it. Object rules come on top (an officer: his own recordings, or
# one he holds a grant for; see test_an_officer_cannot_fetch_another_officers_media).
ROUTE_RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,                          # its own cookie-bound CSRF token
    ("GET", "/healthz"): PUBLIC,                         # {"status", "station"} only
    ("GET", "/vendor/hls.min.js"): Rule(None, files=True),
    ("MOUNT", "/static"): Rule(None, files=True),
    ("POST", "/logout"): Rule(ALL),
    ("GET", "/"): Rule(ALL),                             # an officer: only his own rows
    ("GET", "/queue"): Rule(ALL),                        # an officer: his own; an approver: his officers'
    ("GET", "/recordings/{rec_id}"): Rule(ALL),          # an officer: his own or granted
    ("POST", "/recordings/{rec_id}/label"): Rule(frozenset({"clerk", "officer"})),     # officer: his own
    ("POST", "/recordings/{rec_id}/play"): Rule(frozenset({"officer"}), refusal="view-refused"),  # S8
    ("GET", "/recordings/{rec_id}/playlist.m3u8"): Rule(frozenset({"officer"}), files=True),  # after 播放
    ("GET", "/recordings/{rec_id}/segments/{index}.ts"): Rule(frozenset({"officer"}), files=True),
    ("GET", "/recordings/{rec_id}/notes/{note_id}.aac"): Rule(frozenset({"officer"}), files=True),   # after 播放
    ("POST", "/labels/{label_id}/correct"): Rule(frozenset({"clerk", "officer"})),      # officer: his own
    # cases and their checklist (S4)
    ("GET", "/cases"): Rule(STAFF),
    ("POST", "/cases"): Rule(frozenset({"clerk"})),
    ("GET", "/cases/{case_no}"): Rule(STAFF),
    ("POST", "/cases/{case_no}/status"): Rule(frozenset({"clerk"})),
    ("GET", "/cases/{case_no}/checklist.{fmt}"): Rule(frozenset({"clerk", "approver", "auditor"}), files=True),
    # holds (S6)
    ("GET", "/holds"): Rule(STAFF),
    ("POST", "/holds"): Rule(frozenset({"clerk", "approver", "admin"})),
    ("POST", "/holds/{hold_id}/release"): Rule(frozenset({"approver", "admin"})),
    # expiry (S11): the staff see what is due; only an administrator purges
    ("GET", "/expiry"): Rule(STAFF),
    ("POST", "/expiry/purge"): Rule(frozenset({"admin"})),
    # exports (S7)
    ("GET", "/exports"): Rule(STAFF),
    ("POST", "/exports"): Rule(frozenset({"clerk"})),
    ("GET", "/exports/{export_id}/{copy}.{fmt}"): Rule(frozenset({"clerk"}), files=True),
    # access requests and approvals (S8)
    ("GET", "/requests"): Rule(ALL),                     # an officer: his own requests
    ("POST", "/requests"): Rule(ALL),
    ("POST", "/requests/{req_id}/approve"): Rule(frozenset({"approver"})),
    ("POST", "/requests/{req_id}/refuse"): Rule(frozenset({"approver"})),
    ("POST", "/requests/{req_id}/revoke"): Rule(frozenset({"approver"})),
    # supervision (S10): an officer sees his own figures
    ("GET", "/supervision"): Rule(ALL),
    ("GET", "/supervision.csv"): Rule(ALL, files=True),
    ("GET", "/supervision.pdf"): Rule(ALL, files=True),
    ("POST", "/supervision/signoff/{item}"): Rule(frozenset({"approver"})),
    # the audit trail
    ("GET", "/audit"): Rule(READERS),
    ("GET", "/recordings/{rec_id}/audit"): Rule(READERS),
    ("GET", "/recordings/{rec_id}/audit.csv"): Rule(READERS, files=True),
    ("GET", "/recordings/{rec_id}/audit.pdf"): Rule(READERS, files=True),
    ("GET", "/users/{username}/audit"): Rule(READERS),
    ("GET", "/users/{username}/audit.csv"): Rule(READERS, files=True),
    ("GET", "/users/{username}/audit.pdf"): Rule(READERS, files=True),
}
# a value for each path parameter name (the recording: wang's first); others get "1"
PARAMS = {"index": "0", "fmt": "pdf", "username": "wang", "copy": "1", "note_id": "n1"}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def app_routes(app) -> dict[tuple[str, str], object]:
    """Every (method, path) the application answers, from its route table."""
    out: dict[tuple[str, str], object] = {}
    for r in app.routes:
        if isinstance(r, Mount):
            out[("MOUNT", r.path)] = r
        else:
            for method in sorted((getattr(r, "methods", None) or {"WEBSOCKET"}) - {"HEAD"}):
                out[(method, r.path)] = r
    return out


def url_of(path: str, recording: int, **override: str) -> str:
    values = {"rec_id": str(recording), **PARAMS, **override}
    return _PARAM.sub(lambda g: values.get(g.group(1), "1"), path)


def form_of(route: object, csrf: str | None) -> dict[str, str]:
    """A value for every form field the route declares (so validation passes and the checks decide)."""
    fields = [p.alias for p in route.dependant.body_params] if isinstance(route, APIRoute) else []
    data = {name: "1" for name in fields if name != "csrf"}
    if csrf is not None:
        data["csrf"] = csrf
    return data


def audit_count(web, type_: str, actor: str | None = None) -> int:
    with web.st.db.session() as s:
        q = select(func.count()).select_from(m.AuditEntry).where(m.AuditEntry.type == type_)
        if actor is not None:
            q = q.where(m.AuditEntry.actor == actor)
        return s.scalar(q) or 0


def total_audit(web) -> int:
    with web.st.db.session() as s:
        return s.scalar(select(func.count()).select_from(m.AuditEntry)) or 0


def recording_of(web, officer_no: str = "031337", rid: str = "r1") -> m.Recording:
    with web.st.db.session() as s:
        return s.scalars(select(m.Recording).where(m.Recording.officer_id == officer_no,
                                                   m.Recording.recording_id == rid)).one()


def test_every_route_is_in_the_matrix(web):
    found = set(app_routes(web.app))
    missing = sorted(found - set(ROUTE_RULES))
    assert not missing, f"routes nobody has reviewed: add them to ROUTE_RULES with who may reach them: {missing}"
    stale = sorted(set(ROUTE_RULES) - found)
    assert not stale, f"ROUTE_RULES names routes the application no longer has: {stale}"


def test_no_session_gets_the_sign_in_page_never_content(web):
    rec = recording_of(web)
    routes = app_routes(web.app)
    with closing(http_sign_in(web, "admin")) as probe:      # a session that was signed out
        signed_out = probe.cookies["station_session"]
        assert probe.post("/logout", data={"csrf": probe.csrf}).status_code == 303
    cookies = [{}, {"station_session": secrets.token_urlsafe(32)}, {"station_session": "x" * 4000},
               {"station_session": signed_out}]
    checked = 0
    for (method, path), route in sorted(routes.items()):
        rule = ROUTE_RULES.get((method, path))
        if method == "MOUNT" or rule is None or rule.roles is None:
            continue
        for jar in cookies:
            with httpx.Client(base_url=web.base_url, verify=False, cookies=jar, follow_redirects=False,
                              timeout=60) as c:
                url = url_of(path, rec.id)
                r = c.get(url) if method == "GET" else c.post(url, data=form_of(route, "forged"))
            assert (r.status_code == 303 and r.headers["location"] == "/login") or r.status_code in (401, 403), \
                (method, path, jar.keys(), r.status_code)
            assert rec.name not in r.text and "#EXTM3U" not in r.text and len(r.content) < 20_000, (method, path)
            checked += 1
    assert checked >= 4 * 8


def test_every_post_without_this_sessions_csrf_token_is_refused_and_audited(web):
    rec = recording_of(web)
    routes = app_routes(web.app)
    clients = {role: http_sign_in(web, user) for role, user in USER_OF.items()}
    try:
        posts = [(path, route, ROUTE_RULES[("POST", path)]) for (method, path), route in sorted(routes.items())
                 if method == "POST" and ROUTE_RULES.get(("POST", path), PUBLIC).roles is not None]
        assert len(posts) >= 4
        for path, route, rule in posts:
            role = sorted(rule.roles)[0]
            c, user = clients[role], USER_OF[role]
            other = clients["auditor" if role != "auditor" else "clerk"]
            for token in (None, "", other.csrf, c.csrf[:-1] + ("A" if c.csrf[-1] != "A" else "B")):
                before, audited = total_audit(web), audit_count(web, "csrf-refused", user)
                r = c.post(url_of(path, rec.id), data=form_of(route, token))
                assert r.status_code == 403 and "CSRF" in r.text, (path, token, r.status_code)
                assert audit_count(web, "csrf-refused", user) == audited + 1, (path, token)
                assert total_audit(web) == before + 1, f"{path}: something besides the refusal was written"
            assert c.get("/").status_code == 200           # the session lives on
        # the sign-in form: its token is bound to a cookie the sign-in page set
        with httpx.Client(base_url=web.base_url, verify=False, follow_redirects=False) as anon:
            before = audit_count(web, "csrf-refused", "unknown")
            r = anon.post("/login", data={"username": "clerk", "password": "correct-horse-battery", "csrf": "x"})
            assert r.status_code == 403 and "station_session" not in r.cookies
            anon.get("/login")
            r = anon.post("/login", data={"username": "clerk", "password": "correct-horse-battery",
                                          "csrf": other.csrf})
            assert r.status_code == 403 and "station_session" not in r.cookies
            assert audit_count(web, "csrf-refused", "unknown") == before + 2
    finally:
        for c in clients.values():
            c.close()


def test_session_cookies_are_secure_httponly_and_strict(web):
    with httpx.Client(base_url=web.base_url, verify=False, follow_redirects=False) as c:
        page = c.get("/login")
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = c.post("/login", data={"username": "wang", "password": "correct-horse-battery", "csrf": token})
        session = [h for h in r.headers.get_list("set-cookie") if h.startswith("station_session=")]
        assert session and all(f in session[0].lower() for f in ("httponly", "secure", "samesite=strict"))
        assert r.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in \
            r.headers["content-security-policy"]
        # only the page's own code may be cached (one hour, this browser only); pages and evidence never
        assert c.get("/static/station.css").headers["cache-control"] == "private, max-age=3600"
        assert c.get("/").headers["cache-control"] == "no-store"


def test_each_role_is_refused_every_route_it_may_not_reach_with_an_audit_record(web):
    rec = recording_of(web)
    routes = app_routes(web.app)
    clients = {role: http_sign_in(web, user) for role, user in USER_OF.items()}
    try:
        # the officer presses 播放 on his own recording: his playlist and segments are his to fetch
        r = clients["officer"].post(f"/recordings/{rec.id}/play", data={"csrf": clients["officer"].csrf,
                                                                         "reason": "核对"})
        assert r.status_code == 303
        refused = allowed = 0
        for (method, path), route in sorted(routes.items()):
            rule = ROUTE_RULES[(method, path)]
            if method == "MOUNT" or rule.roles is None:
                continue
            for role, c in clients.items():
                user, url = USER_OF[role], url_of(path, rec.id)
                if role in rule.roles:
                    if method == "GET":                    # a POST would act: its refusals are what we test
                        r = c.get(url)
                        assert r.status_code != 403 and r.headers.get("location") != "/login", \
                            (role, method, path, r.status_code, r.text[:300])
                        allowed += 1
                    continue
                before = audit_count(web, rule.refusal, user)
                r = c.get(url) if method == "GET" else c.post(url, data=form_of(route, c.csrf))
                assert r.status_code == 403, (role, method, path, r.status_code, r.text[:300])
                assert audit_count(web, rule.refusal, user) == before + 1, \
                    f"{role} refused {method} {path} without a {rule.refusal} audit record"
                assert rec.name not in r.text, (role, method, path)          # a refusal shows nothing of it
                refused += 1
        assert refused >= 10 and allowed >= 10
    finally:
        for c in clients.values():
            c.close()


# ---- path traversal -------------------------------------------------------------------------------------
def _raw(web, target: str, cookie: str | None = None) -> tuple[int, bytes]:
    """GET exactly ``target`` (no client-side normalisation of dots or escapes); (status, body)."""
    url = urlsplit(web.base_url)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    head = f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n"
    if cookie:
        head += f"Cookie: station_session={cookie}\r\n"
    with socket.create_connection((url.hostname, url.port), timeout=60) as raw, \
            ctx.wrap_socket(raw, server_hostname=url.hostname) as s:
        s.sendall((head + "\r\n").encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _payloads(secret: Path, here: Path) -> list[str]:
    rel = os.path.relpath(secret, here)                     # ../../../tmp/.../outside-secret.txt
    return [rel, rel.replace("/", "%2f"), rel.replace("..", "%2e%2e"),
            rel.replace("..", "%2e%2e").replace("/", "%2F"), rel.replace("..", "%252e%252e").replace("/", "%252f"),
            rel.replace("/", "%5c"), rel.replace("../", "....//"),
            "/" + str(secret), quote(str(secret), safe=""), "%2e%2e%2f" * 12 + "etc%2fpasswd", "..%00", "~root"]


def test_path_traversal_on_every_file_serving_route(web):
    rec = recording_of(web)
    marker = "SECRET-" + secrets.token_hex(8)
    secret = web.st.store.parent / "outside-secret.txt"
    secret.write_text(marker + "\n")
    markers = [marker.encode(), b"root:x:0:0", b"PRIVATE KEY"]
    routes = app_routes(web.app)
    files = sorted(k for k, rule in ROUTE_RULES.items() if rule.files and k in routes)
    assert ("MOUNT", "/static") in files and ("GET", "/recordings/{rec_id}/segments/{index}.ts") in files
    link = HERE / "static" / f"test-link-{secrets.token_hex(4)}.css"
    clients = {role: http_sign_in(web, user) for role, user in USER_OF.items()}
    wang = clients["officer"]
    try:
        assert wang.post(f"/recordings/{rec.id}/play", data={"csrf": wang.csrf, "reason": "核对"}).status_code == 303
        tried = 0
        for method, path in files:
            roles = ROUTE_RULES[(method, path)].roles
            who = clients["officer" if roles is None or "officer" in roles else sorted(roles)[0]]
            cookie = who.cookies["station_session"]       # one who may reach it: the check that matters is the path
            for p in _payloads(secret, HERE / "static" if path == "/static" else HERE):
                if method == "MOUNT":
                    targets = [f"{path}/{p}"]
                elif "{" not in path:
                    targets = [path.rsplit("/", 1)[0] + "/" + p]
                else:
                    targets = [url_of(path, rec.id, **{name: p}) for name in _PARAM.findall(path)]
                for target in targets:
                    status, body = _raw(web, target, cookie)
                    assert status in (400, 403, 404, 405, 422), (target, status, body[:200])
                    assert not any(mk in body for mk in markers), (target, status)
                    tried += 1
        assert tried > 100
        # a symlink in the static directory pointing outside is not followed
        try:
            link.symlink_to(secret)
            status, body = _raw(web, f"/static/{link.name}")
            assert status == 404 and marker.encode() not in body
        finally:
            link.unlink(missing_ok=True)
        # a stored segment replaced by a symlink to a file outside: refused (it is not the journaled bytes)
        with web.st.db.session() as s:
            seg = s.scalars(select(m.Segment).where(m.Segment.recording == rec.id, m.Segment.index == 1)).one()
        original = web.st.store / "devices" / rec.device_id / "mirror" / seg.path
        os.chmod(original.parent, 0o755)
        original.unlink()
        original.symlink_to(secret)
        r = wang.get(f"/recordings/{rec.id}/segments/1.ts")
        assert r.status_code == 409 and marker not in r.text
        assert audit_count(web, "integrity-alert", "wang") == 1
        # the playlist never names anything but this recording's numbered segments
        playlist = wang.get(f"/recordings/{rec.id}/playlist.m3u8").text
        assert all(re.fullmatch(rf"/recordings/{rec.id}/segments/\d+\.ts", ln)
                   for ln in playlist.splitlines() if ln and not ln.startswith("#"))
    finally:
        for c in clients.values():
            c.close()


def test_an_officer_cannot_fetch_another_officers_media(web):
    w = web
    mine = recording_of(w)
    with w.st.db.session() as s:
        top = s.scalar(select(func.max(m.Recording.id)))
    notes = int(("GET", "/recordings/{rec_id}/notes/{note_id}.aac") in app_routes(w.app))
    with closing(http_sign_in(w, "wang")) as wang, closing(http_sign_in(w, "li")) as li:
        assert wang.post(f"/recordings/{mine.id}/play", data={"csrf": wang.csrf, "reason": "核对"}).status_code == 303
        assert wang.get(f"/recordings/{mine.id}/playlist.m3u8").status_code == 200
        before = audit_count(w, "not-allowed", "li")
        for rec_id in range(1, top + 3):                     # every id there is, and two that are not
            assert li.get(f"/recordings/{rec_id}").status_code == 403, rec_id
            assert li.get(f"/recordings/{rec_id}/playlist.m3u8").status_code == 403, rec_id
            for index in range(3):
                r = li.get(f"/recordings/{rec_id}/segments/{index}.ts")
                assert r.status_code == 403 and not r.content.startswith(b"G"), (rec_id, index)
            if notes:
                assert li.get(f"/recordings/{rec_id}/notes/n1.aac").status_code == 403, rec_id
        assert audit_count(w, "not-allowed", "li") >= before + (top + 2) * (5 + notes)
        # pressing 播放 himself: refused by the access rules, audited
        r = li.post(f"/recordings/{mine.id}/play", data={"csrf": li.csrf, "reason": "好奇"})
        assert r.status_code == 403 and audit_count(w, "view-refused", "li") == 1
        assert f'href="/requests?recording=%23{mine.id}"' in r.text          # where to ask instead
        # with an approved request he may: the page, the playlist and the original bytes
        req = request_access(w.st, w.user("li"), mine.id, "view", "协助办案")
        approve(w.st, w.user("chief"), req.id, hours=2)
        assert li.get(f"/recordings/{mine.id}").status_code == 200
        assert li.post(f"/recordings/{mine.id}/play", data={"csrf": li.csrf, "reason": "协助办案"}).status_code == 303
        with w.st.db.session() as s:
            first = s.scalars(select(m.Segment).where(m.Segment.recording == mine.id, m.Segment.index == 0)).one()
        r = li.get(f"/recordings/{mine.id}/segments/0.ts")
        assert r.status_code == 200 and len(r.content) == first.size
        # ... and only that one: wang's other recording stays closed to him
        other = recording_of(w, rid="r2")
        assert li.get(f"/recordings/{other.id}/segments/0.ts").status_code == 403
