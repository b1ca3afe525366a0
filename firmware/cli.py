"""``bodycam``: the device service's command line.

Quiet by default: a command prints its result (e.g. the directory it
recorded into) on stdout, problems on stderr, and says how it went in its
exit code. ``-v`` shows progress and info logs.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from firmware import config as config_mod

log = logging.getLogger("bodycam")

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG, EXIT_STORAGE = 0, 1, 2, 3, 4


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * verbosity
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def _stall(text: str) -> tuple[float, float]:
    try:
        at, length = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AT:SECONDS, got {text!r}") from None
    return at, length


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv: debug)")
    p = argparse.ArgumentParser(prog="bodycam", description="Body-worn camera recording service.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("record", parents=[common], help="record continuous signed segments",
                       description="Record H.264+AAC in rolling segments with the time burned in.")
    r.add_argument("--config", type=Path, help="TOML configuration file (default: built-in defaults)")
    r.add_argument("--sim", action="store_true", help="use simulated camera and microphone")
    r.add_argument("--fast", action="store_true",
                   help="with --sim: run as fast as possible on a virtual clock")
    r.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    r.add_argument("--out", type=Path, help="evidence directory (default: storage.dir)")
    r.add_argument("--audio-wav", type=Path, help="with --sim: play this WAV into the microphone")
    r.add_argument("--camera-stall", type=_stall, action="append", metavar="AT:SECONDS",
                   help="with --sim: the camera delivers nothing from AT for SECONDS")
    r.add_argument("--mic-dead-from", type=float, metavar="SECONDS",
                   help="with --sim: the microphone delivers nothing from this time on")
    r.add_argument("--key-dir", type=Path, help="device key directory (default: identity.key_dir)")
    r.add_argument("--provision", action="store_true",
                   help="create the device key if there is none (bench and simulation)")
    r.add_argument("--no-seal", action="store_true", help=argparse.SUPPRESS)  # benchmarks only
    r.set_defaults(func=cmd_record)

    from firmware import evidence_cli
    evidence_cli.add_subcommands(sub)

    c = sub.add_parser("config", parents=[common], help="check or print the configuration")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    chk = csub.add_parser("check", parents=[common], help="validate a configuration file")
    chk.add_argument("file", type=Path)
    chk.set_defaults(func=cmd_config_check)
    dfl = csub.add_parser("defaults", parents=[common], help="print every key with its default and meaning")
    dfl.set_defaults(func=cmd_config_defaults)
    return p


def cmd_config_check(args) -> int:
    config_mod.load(args.file)
    return EXIT_OK


def cmd_config_defaults(args) -> int:
    sys.stdout.write(config_mod.render_defaults())
    return EXIT_OK


def cmd_record(args) -> int:
    from firmware import hardware
    from firmware.evidence import open_evidence
    from recorder.identity import IdentityError
    from recorder.journal import JournalError
    from recorder.pipeline import Pipeline
    from recorder.segmenter import StorageError

    cfg = config_mod.load(args.config)
    out = args.out or Path(cfg["storage"]["dir"])
    config_mod.check_output_dir(out, "--out" if args.out else f"{args.config}: storage.dir")
    if args.sim:
        devices = hardware.simulated(cfg, realtime=not args.fast, wav=args.audio_wav,
                                     camera_stalls=args.camera_stall,
                                     mic_dead_from=args.mic_dead_from)
    else:
        devices = hardware.raspberry_pi(cfg)
    evidence = None
    if not args.no_seal:
        key_dir = args.key_dir or Path(cfg["identity"]["key_dir"])
        try:
            evidence = open_evidence(out, key_dir, devices.wall_clock, devices.timebase.now_ns,
                                     provision=args.provision,
                                     boot_payload={"device_id": cfg["device"]["id"],
                                                   "officer_id": cfg["device"]["officer_id"],
                                                   "simulated": bool(args.sim)})
        except (IdentityError, JournalError, OSError) as exc:
            print(f"bodycam: cannot open the evidence store: {exc}", file=sys.stderr)
            return EXIT_FAIL
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    reserve = cfg["storage"]["reserve_mb"] * 1024 * 1024
    pipeline = Pipeline(config_mod.pipeline_settings(cfg), devices.camera, devices.microphone,
                        devices.timebase, devices.wall_clock, out, stop=stop,
                        sink=evidence.sealer if evidence else None,
                        on_event=evidence.record if evidence else None,
                        storage_low=(lambda: evidence.store.nearly_full(reserve)) if evidence else None)
    progress = _Progress(pipeline, args.duration, cfg["video"]["fps"]) if sys.stderr.isatty() else None
    status = EXIT_OK
    try:
        results = pipeline.run(args.duration)
        if any(r.cause == "storage-full" for r in results):
            print("bodycam: storage nearly full: recording stopped, dock the device",
                  file=sys.stderr)
            status = EXIT_STORAGE
    except StorageError as exc:
        print(f"bodycam: storage failed: {exc}", file=sys.stderr)
        status = EXIT_STORAGE
    finally:
        if progress:
            progress.done()
        if evidence:
            evidence.close("storage-error" if status == EXIT_STORAGE else "stop")
    print(out)
    return status


class _Progress:
    """A one-line progress display on a terminal; silent when stderr is a file or journald."""

    def __init__(self, pipeline, duration, fps) -> None:
        self.p, self.total, self.fps = pipeline, duration, fps
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            secs = self.p.heartbeat / self.fps
            of = f" / {self.total:.0f}" if self.total else ""
            sys.stderr.write(f"\rrecording {secs:7.1f}{of} s")
            sys.stderr.flush()

    def done(self) -> None:
        self._stop.set()
        sys.stderr.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", 0))
    try:
        if hasattr(args, "handler"):  # subcommands registered by firmware.evidence_cli
            return args.handler(args)
        return args.func(args)
    except config_mod.ConfigError as exc:
        print(f"bodycam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
