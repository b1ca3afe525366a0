"""Signing in and out (station accounts, argon2; sessions in the catalogue)."""
from __future__ import annotations

import secrets

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from station.errors import NotAllowed
from station.web import sessions
from station.web.guard import Web


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, error: str = "") -> Response:
        token = request.cookies.get(sessions.LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        resp = web.render(request, "login.html", csrf=token, error=error)
        resp.set_cookie(sessions.LOGIN_CSRF_COOKIE, token, httponly=True, secure=True, samesite="strict")
        return resp

    @app.post("/login")
    def login(request: Request, username: str = Form(...), password: str = Form(...),
              csrf: str = Form("")) -> Response:
        if not sessions.same(csrf, request.cookies.get(sessions.LOGIN_CSRF_COOKIE)):
            st.trail.event("csrf-refused", actor="unknown", subject="sign-in", via="web")
            return web.render(request, "login.html", 403, csrf=request.cookies.get(sessions.LOGIN_CSRF_COOKIE, ""),
                              error="表单已过期，请重新登录")
        try:
            token, _ = sessions.sign_in(st, username.strip(), password)
        except NotAllowed:
            return web.render(request, "login.html", 401, csrf=csrf, error="用户名或密码错误")
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(sessions.COOKIE, token, httponly=True, secure=True, samesite="strict")
        resp.delete_cookie(sessions.LOGIN_CSRF_COOKIE)
        return resp

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        sessions.sign_out(st, signed)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(sessions.COOKIE)
        return resp
