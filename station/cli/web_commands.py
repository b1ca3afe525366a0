"""``station serve``: the web interface over HTTPS (uvicorn), as the systemd unit runs it."""
from __future__ import annotations

import argparse
import logging
import sys

from station.cli.common import add_common, open_station
from station.errors import EXIT_OK, InvalidInput
from station.web.tls import spki_pin

log = logging.getLogger(__name__)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from station.web.app import create_app
    st = open_station(args)
    web = st.cfg.web
    cert, key = st.cfg.web_cert_path, st.cfg.web_key_path
    if not cert.is_file() or not key.is_file():
        raise InvalidInput(f"no HTTPS certificate at {cert} / {key}: run `station init` (makes a self-signed one) "
                           "or set [web] cert_file and key_file")
    host = args.listen or web.listen_address
    port = web.port if args.port is None else args.port
    print(f"station: serving https://{host}:{port}/ (certificate {cert}, SPKI pin {spki_pin(cert)})",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(create_app(st), host=host, port=port, ssl_certfile=str(cert), ssl_keyfile=str(key),
                    log_level="warning" if args.verbose == 0 else "info", access_log=args.verbose > 0,
                    server_header=False)
    finally:
        st.close()
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_common(sub.add_parser("serve", help="serve the web interface over HTTPS ([web] in the config)"),
                   user=False)
    p.add_argument("--listen", help="override [web] listen_address")
    p.add_argument("--port", type=int, help="override [web] port (0: any free port)")
    p.set_defaults(func=cmd_serve)
