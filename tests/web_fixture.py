"""The station's web interface under test: the real application under uvicorn over HTTPS, and Debian's
chromium driven by Playwright, the station's certificate pinned by its SPKI hash (no "ignore all
certificate errors"). Fed by a real docking; the station's clock is the test's (session expiry
without waiting). Import ``web``, ``browser`` (and ``sqlite_station_world``) into a test module.
"""
import shutil
import threading
import time

import pytest
from sqlalchemy import select

from station.db import models as m
from station.web.app import create_app
from station.web.tls import spki_pin
from tests.station_fixture import PASSWORD, sqlite_station_world  # noqa: F401

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture()
def web(sqlite_station_world):
    import uvicorn
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 2, "r2": 1})
    cert, key = w.cfg.web_cert_path, w.cfg.web_key_path
    server = uvicorn.Server(uvicorn.Config(create_app(w.st), host="127.0.0.1", port=0, ssl_certfile=str(cert),
                                           ssl_keyfile=str(key), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "web server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    w.base_url = f"https://127.0.0.1:{port}"
    w.pin = spki_pin(cert)
    yield w
    server.should_exit = True
    thread.join(timeout=10)


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
    page = browser.new_context().new_page()
    page.goto(web.base_url + "/")
    assert page.url.endswith("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    return page


def audit(web, type_):
    with web.st.db.session() as s:
        return [(e.actor, e.subject) for e in s.scalars(select(m.AuditEntry).where(m.AuditEntry.type == type_))]
