"""The station's web interface under test: the real application under uvicorn over HTTPS, and Debian's
chromium driven by Playwright, the station's certificate pinned by its SPKI hash (no "ignore all
certificate errors"). Fed by a real docking; the station's clock is the test's (session expiry
without waiting). Import ``web``, ``browser`` (and ``sqlite_station_world``) into a test module;
``web.app`` is the application itself (its routes), ``http_sign_in`` a signed-in httpx client
without a browser, ``screenshot`` saves a page under ``SCREENSHOTS`` (printed) as a test artifact.
"""
import contextlib
import html
import os
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from station.db import models as m
from station.web.app import create_app
from station.web.tls import spki_pin
from tests.station_fixture import PASSWORD, sqlite_station_world  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("STATION_SCREENSHOTS", Path(__file__).resolve().parents[1] / "out" / "screenshots"))
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@contextlib.contextmanager
def serving(app, cert, key):
    """``app`` under a real uvicorn over HTTPS on a free loopback port; yields its base URL."""
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, ssl_certfile=str(cert),
                                           ssl_keyfile=str(key), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "web server did not start"
            time.sleep(0.05)
        yield f"https://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture()
def web(sqlite_station_world):
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 2, "r2": 1})
    cert, key = w.cfg.web_cert_path, w.cfg.web_key_path
    w.app = create_app(w.st)
    with serving(w.app, cert, key) as base_url:
        w.base_url = base_url
        w.pin = spki_pin(cert)
        yield w


@pytest.fixture()
def browser(web):
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian chromium not installed (deploy/bootstrap-dev.sh)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=[f"--ignore-certificate-errors-spki-list={web.pin}"])
        yield b
        b.close()


def sign_in(browser, web, username):
    """A new browser page signed in as ``username``, returned once the signed-in page (with its
    sign-out button) has loaded."""
    page = browser.new_context().new_page()
    page.goto(web.base_url + "/")
    assert page.url.endswith("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    follow(page, "button[type=submit]")
    page.locator("#logout").wait_for(state="attached")
    return page


def follow(page, target):
    """Click ``target`` (a selector on ``page``, or a locator) that loads a new page, and return once
    that page has loaded. A click waits only until the new document starts loading, so reading it at
    once (``count()``, ``content()``, ``evaluate``) could see it half parsed, and a count of 0 pass
    for the wrong reason."""
    (page.locator(target) if isinstance(target, str) else target).click()
    page.wait_for_load_state()


def audit(web, type_):
    with web.st.db.session() as s:
        return [(e.actor, e.subject) for e in s.scalars(select(m.AuditEntry).where(m.AuditEntry.type == type_))]


def csrf_of(page_html):
    """The CSRF token of the first form of a page (the sign-out form on every signed-in page)."""
    found = _CSRF.search(page_html)
    assert found, "no form with a CSRF token on this page"
    return html.unescape(found.group(1))


def http_sign_in(web, username, password=PASSWORD):
    """An httpx client signed in as ``username`` through the real sign-in form of ``web`` (the
    fixture, or a base URL); ``client.csrf`` is its session's CSRF token. Close it when done
    (``contextlib.closing``)."""
    c = httpx.Client(base_url=getattr(web, "base_url", web), verify=False, follow_redirects=False, timeout=60)
    r = c.get("/login")
    r = c.post("/login", data={"username": username, "password": password, "csrf": csrf_of(r.text)})
    assert r.status_code == 303 and "station_session" in c.cookies, (username, r.status_code, r.text[:300])
    c.csrf = csrf_of(c.get("/").text)
    return c


def screenshot(page, name):
    """Save a full-page screenshot as a test artifact and print where (``STATION_SCREENSHOTS``
    overrides the directory, by default ``out/screenshots/`` in the checkout, ignored by git)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
