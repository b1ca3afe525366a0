"""Playing the verified originals: start a playback (S8), its HLS playlist, its segments, hls.js."""
from __future__ import annotations

from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from station.errors import Conflict, NotAllowed, NotFound, StationError
from station.web.guard import HERE, Refused, Web
from station.web.playback import Playbacks

HLS_JS = HERE / "node_modules" / "hls.js" / "dist" / "hls.min.js"


def register(app: FastAPI, web: Web) -> None:
    st = web.st
    playbacks = web.playbacks

    @app.post("/recordings/{rec_id}/play")
    def play(request: Request, rec_id: int, reason: str = Form(""), csrf: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        try:
            playbacks.start(st, signed.token_sha256, signed.user, rec_id, reason)
        except NotAllowed as exc:
            raise Refused(f"查看录像 {rec_id}", f"{exc}。请先提出调阅申请。",
                          ask=f"/requests?recording=%23{rec_id}") from None
        except (Conflict, NotFound, StationError) as exc:
            return web.render(request, "not_allowed.html", 409, signed=signed, what=f"播放录像 {rec_id}",
                              why=str(exc))
        return RedirectResponse(f"/recordings/{rec_id}?playing=1", status_code=303)

    @app.get("/recordings/{rec_id}/playlist.m3u8")
    def playlist(request: Request, rec_id: int) -> Response:
        signed = web.who(request)
        try:
            pb = playbacks.get(st, signed.token_sha256, rec_id)
        except NotAllowed as exc:
            return web.refuse_fetch(signed, f"recording:{rec_id}", str(exc))
        return Response(Playbacks.playlist(pb, rec_id), media_type="application/vnd.apple.mpegurl")

    @app.get("/recordings/{rec_id}/segments/{index}.ts")
    def segment(request: Request, rec_id: int, index: int) -> Response:
        signed = web.who(request)
        try:
            pb = playbacks.get(st, signed.token_sha256, rec_id)
            data = Playbacks.segment(st, signed.user, pb, index)
        except NotAllowed as exc:
            return web.refuse_fetch(signed, f"recording:{rec_id}", str(exc))
        except NotFound as exc:
            return Response(str(exc), status_code=404)
        except StationError as exc:          # the original is not what the journal attests
            return Response(str(exc), status_code=409)
        return Response(data, media_type="video/mp2t")

    @app.get("/vendor/hls.min.js")
    def hls_js() -> Response:
        if not HLS_JS.is_file():
            return Response("hls.js is not installed: run deploy/bootstrap-dev.sh (npm ci)", status_code=503)
        return FileResponse(HLS_JS, media_type="text/javascript")
