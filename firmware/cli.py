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
    r.set_defaults(func=cmd_record)

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
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    pipeline = Pipeline(config_mod.pipeline_settings(cfg), devices.camera, devices.microphone,
                        devices.timebase, devices.wall_clock, out, stop=stop)
    progress = _Progress(pipeline, args.duration, cfg["video"]["fps"]) if sys.stderr.isatty() else None
    try:
        results = pipeline.run(args.duration)
    except StorageError as exc:
        print(f"bodycam: storage failed: {exc}", file=sys.stderr)
        print(out)
        return EXIT_STORAGE
    finally:
        if progress:
            progress.done()
    for r in results:
        log.info("%s: %s, %d segments", r.recording_id, r.cause, len(r.segments))
    print(out)
    return EXIT_OK


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
        return args.func(args)
    except config_mod.ConfigError as exc:
        print(f"bodycam: {exc}", file=sys.stderr)
        return EXIT_CONFIG
