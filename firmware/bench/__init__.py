"""The bench console: driving ``bodycam run --sim`` by hand or from a rig's own scripts.

One line-command language (:mod:`firmware.bench.commands`), executed inside the device
service's loop (:mod:`firmware.bench.rig`), reached from a terminal
(:mod:`firmware.bench.console`, ``--console``) or a Unix socket with one JSON reply per line
and an ``events`` subscription (:mod:`firmware.bench.server`, ``--bench-socket``; client:
``bodycam bench send``, :mod:`firmware.bench.client`). The protocol: ``docs/bench-console.md``.
"""
