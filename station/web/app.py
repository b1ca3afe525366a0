"""The web application: every page behind sign-in, CSRF (on every POST) and a role check.

``create_app(station)`` builds it around one open ``Station``; ``station serve`` runs it with
uvicorn over HTTPS. The pages live in ``station/web/routes/`` (one module per area, listed in
``ROUTES``); what they share (templates, who is signed in, the checks) is ``guard.Web``. A
refused route renders the "无权访问" page (403) and the refusal is audited, like a refused command.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from station.app import Station
from station.web.guard import HERE, Redirect, Refused, Web
from station.web.routes import (
    audit,
    cases,
    expiry,
    exports,
    holds,
    labels,
    media,
    queue,
    recording_view,
    recordings,
    requests,
    signin,
    supervision,
)

ROUTES = (signin, recordings, queue, media, labels, cases, holds, expiry, exports,
          requests, supervision, audit, recording_view)

CSP = ("default-src 'self'; media-src 'self' blob:; object-src 'none'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def create_app(st: Station) -> FastAPI:
    app = FastAPI(title="证据管理工作站", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    web = Web(st)

    @app.exception_handler(Redirect)
    async def _redirect(request: Request, exc: Redirect) -> Response:
        return RedirectResponse(exc.to, status_code=303)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return web.render(request, "not_allowed.html", 403, what=exc.what, why=exc.why, ask=exc.ask,
                          signed=web.signed_or_none(request))

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        # evidence and pages are never cached; the page's own code (same for everyone) may be
        # kept for an hour, so opening a recording does not fetch and parse hls.js again
        static = request.url.path.startswith(("/static/", "/vendor/"))
        response.headers.setdefault("Cache-Control", "private, max-age=3600" if static else "no-store")
        return response

    for area in ROUTES:
        area.register(app, web)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "station": st.name}

    app.state.station = st
    app.state.web = web
    return app
