"""The station's web interface: server-rendered pages (FastAPI + Jinja2), served over HTTPS by uvicorn.

Every route goes through the same sign-in, session and role checks as the command line's
actions (``station.access``); every refusal is audited. Front-end packages (hls.js) come
from npm (``package.json`` here, installed by the set-up), never copied into the repository.
"""
