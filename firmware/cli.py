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
from typing import TYPE_CHECKING, Any, NoReturn

from firmware import config as config_mod

if TYPE_CHECKING:
    from firmware.bench.rig import Bench
    from firmware.bench.server import BenchServer
    from firmware.docking import DockWatcher
    from firmware.evidence import Evidence
    from firmware.hardware import Devices
    from firmware.service import Service
    from firmware.watchdog import Watchdog
    from recorder.pipeline import Pipeline

Config = dict[str, dict[str, Any]]   # a validated configuration (firmware.config.load)

log = logging.getLogger("bodycam")

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG, EXIT_STORAGE, EXIT_IN_USE = 0, 1, 2, 3, 4, 5

PROG = "bodycam"


def error(message: str) -> None:
    """Report a problem on stderr with the one prefix every bodycam error has (argparse's too)."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("bodycam")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _ShowVersion(argparse.Action):
    """``--version``: looked up only when asked (importlib.metadata costs every other run
    start-up time and memory)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "show the version and exit") -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _seconds(text: str) -> float:
    """A duration: a finite number of seconds greater than zero."""
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds greater than 0, got {text!r}")
    return value


def _evidence_open_failed(exc: Exception, key_dir: Path | None, provision: bool = True) -> int:
    """Report why the evidence store could not be opened; a missing key says how to get one."""
    from recorder.identity import IdentityMissing
    if isinstance(exc, IdentityMissing) and key_dir is not None:
        error(f"no device key in {key_dir}: create one with 'bodycam identity init --key-dir "
              f"{key_dir}', or point --key-dir at the device's key directory"
              + (", or (bench and simulation only) add --provision to create one here"
                 if provision else ""))
    else:
        error(f"cannot open the evidence store: {exc}")
    return EXIT_FAIL


def _require_key(args: argparse.Namespace, cfg: Config) -> None:
    """Refuse before anything is created (output directory, runtime files) when the device key
    is missing and will not be provisioned. Raises IdentityMissing."""
    from recorder import identity
    if getattr(args, "provision", False) or getattr(args, "no_seal", False):
        return
    identity.FileSigner.load(_key_dir(args, cfg))


def _key_dir(args: argparse.Namespace, cfg: Config) -> Path:
    return args.key_dir or Path(cfg["identity"]["key_dir"])


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


class _Parser(argparse.ArgumentParser):
    """argparse with bodycam's one error prefix, for the subcommands too ("bodycam: error: ...",
    not "bodycam record: error: ...")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{PROG}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)   # only lends its options (parents=[common])
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv: debug)")
    common.add_argument("-q", "--quiet", action="count", default=0,
                        help="less log output on stderr (errors only)")
    p = _Parser(prog=PROG, description="Body-worn camera recording service.")
    p.add_argument("--version", action=_ShowVersion)
    # the same options before the command (``bodycam -v status``); merged in main()
    p.add_argument("-v", "--verbose", dest="global_verbose", action="count", default=0,
                   help="more log output on stderr (-vv: debug)")
    p.add_argument("-q", "--quiet", dest="global_quiet", action="count", default=0,
                   help="less log output on stderr (errors only)")
    p.add_argument("--config", dest="global_config", type=Path, metavar="FILE",
                   help="TOML configuration file, for the commands that take one")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("record", parents=[common], help="record continuous signed segments",
                       description="Record H.264+AAC in rolling segments with the time burned in.")
    r.add_argument("--config", type=Path, help="TOML configuration file (default: built-in defaults)")
    r.add_argument("--sim", action="store_true", help="use simulated camera and microphone")
    r.add_argument("--fast", action="store_true",
                   help="with --sim: run as fast as possible on a virtual clock")
    r.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop after this long")
    r.add_argument("--out", type=Path, help="evidence directory (default: storage.dir)")
    r.add_argument("--audio-wav", type=Path, help="with --sim: play this WAV into the microphone")
    r.add_argument("--camera-stall", type=_stall, action="append", metavar="AT:SECONDS",
                   help="with --sim: the camera delivers nothing from AT for SECONDS")
    r.add_argument("--mic-dead-from", type=float, metavar="SECONDS",
                   help="with --sim: the microphone delivers nothing from this time on")
    r.add_argument("--sim-gps", metavar="SCENARIO",
                   choices=["cold_start", "fix_acquired", "tunnel", "bad_checksums", "clock_jump"],
                   help="with --sim: a simulated GPS receiver on a pty (position on the stamp)")
    r.add_argument("--key-dir", type=Path, help="device key directory (default: identity.key_dir)")
    r.add_argument("--provision", action="store_true",
                   help="create the device key if there is none (bench and simulation)")
    r.add_argument("--no-seal", action="store_true", help=argparse.SUPPRESS)  # benchmarks only
    _add_devices_option(r)
    r.set_defaults(func=cmd_record)

    from firmware import evidence_cli
    evidence_cli.add_subcommands(sub)
    from firmware import shift_report
    shift_report.add_subcommands(sub)

    _add_service_commands(sub, common)
    from firmware.bench import client as bench_client
    bench_client.add_subcommands(sub, common)
    from firmware import dock_cli
    dock_cli.add_subcommands(sub)

    c = sub.add_parser("config", parents=[common], help="check or print the configuration")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    chk = csub.add_parser("check", parents=[common], help="validate a configuration file")
    chk.add_argument("file", type=Path)
    chk.set_defaults(func=cmd_config_check)
    dfl = csub.add_parser("defaults", parents=[common], help="print every key with its default and meaning")
    dfl.set_defaults(func=cmd_config_defaults)
    return p


def _add_service_commands(sub: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    run = sub.add_parser("run", parents=[common], help="run the device service (buttons, lamps, policy)",
                         description="The device service: self-check, pre-event buffer, recording "
                                     "on the officer's buttons, reasons, reminders, power watch.")
    run.add_argument("--config", type=Path, help="TOML configuration file")
    run.add_argument("--sim", action="store_true",
                     help="simulated camera, microphone, battery and MockFactory pins (real time)")
    run.add_argument("--out", type=Path, help="evidence directory (default: storage.dir)")
    run.add_argument("--key-dir", type=Path, help="device key directory (default: identity.key_dir)")
    run.add_argument("--provision", action="store_true", help="create the device key if there is none")
    run.add_argument("--duration", type=_seconds, metavar="SECONDS", help="shut down after this long")
    run.add_argument("--console", action="store_true",
                     help="bench console on this terminal: press buttons, inject faults, see lamps and "
                          "cues live ('help' lists the commands; docs/bench-console.md)")
    run.add_argument("--bench-socket", nargs="?", type=Path, const=_DEFAULT_SOCKET, metavar="PATH",
                     help="the same commands from other processes over a Unix socket, one JSON reply "
                          "per line (default PATH: service.runtime_dir/bench.sock)")
    _add_devices_option(run)
    run.set_defaults(func=cmd_run)
    st = sub.add_parser("status", parents=[common], help="run the self-check and print it (journaled)")
    st.add_argument("--config", type=Path, help="TOML configuration file")
    st.add_argument("--sim", action="store_true", help="when no service runs: check simulated hardware")
    st.add_argument("--out", type=Path, help="evidence directory (default: storage.dir)")
    st.add_argument("--key-dir", type=Path, help="device key directory (default: identity.key_dir)")
    st.add_argument("--provision", action="store_true", help=argparse.SUPPRESS)
    st.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a running service")
    _add_devices_option(st)
    st.set_defaults(func=cmd_status)
    sc = sub.add_parser("scenario", parents=[common], help="run a scripted shift on simulated hardware",
                        description="Run a shift script (see sim/scenario.py) faster than real time.")
    sc.add_argument("file", type=Path)
    sc.add_argument("--out", type=Path, required=True, help="new evidence directory")
    sc.add_argument("--config", type=Path, help="TOML configuration (script 'set' lines override it)")
    sc.set_defaults(func=cmd_scenario)


_DEFAULT_SOCKET = Path("bench.sock")   # --bench-socket without a path: in the runtime directory


def _add_devices_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=Path, metavar="FILE",
                   help="TOML file with a [devices] table choosing real or sim part by part "
                        "(also $BODYCAM_DEVICES; BODYCAM_CAMERA=real|sim etc. override it)")


def _selection(args: argparse.Namespace, gps_default: str | None = None) -> Any:
    """Which parts are real and which simulated (``firmware.hardware.DeviceSelection``)."""
    from firmware import hardware
    selection = hardware.DeviceSelection.resolve(bool(args.sim), file=getattr(args, "devices", None),
                                                 gps_default=gps_default)
    selection.check_libraries()
    return selection


def _boot_devices(selection: Any) -> dict[str, Any]:
    """The boot record says which parts were real when the device mixes them."""
    return {"devices": selection.as_dict()} if selection.mixed else {}


def cmd_scenario(args: argparse.Namespace) -> int:
    from firmware import hardware
    return hardware.run_scenario_file(args.file, args.out, args.config)


def _open_evidence(args: argparse.Namespace, cfg: Config, out: Path, devices: Devices) -> Evidence:
    """Key, journal (boot record, salvage of what a crash left) and the config in force."""
    from firmware import hardware
    selection = devices.selection
    return hardware.open_device_evidence(cfg, devices, out, _key_dir(args, cfg),
                                         provision=args.provision,
                                         simulated=bool(args.sim) or bool(selection and selection.mixed),
                                         boot_extra=_boot_devices(selection) if selection else None)


def _open_service(args: argparse.Namespace, cfg: Config, realtime: bool = True) -> tuple[Service, Path]:
    """Devices, evidence and the Service for ``run``/``status`` (sim or the Pi)."""
    from firmware import hardware

    out = args.out or Path(cfg["storage"]["dir"])
    out = config_mod.check_output_dir(out, "--out" if args.out else "storage.dir")
    bench = bool(getattr(args, "console", False) or getattr(args, "bench_socket", None))
    selection = _selection(args, gps_default="sim" if bench and args.sim else None)
    devices = hardware.build_devices(cfg, selection, realtime=realtime)   # sim: its one time quality
    return hardware.build_service(cfg, devices, out, _key_dir(args, cfg),
                                  sim=bool(args.sim) or selection.mixed, provision=args.provision,
                                  boot_extra=_boot_devices(selection)), out


def _runtime(cfg: Config) -> Path:
    return Path(config_mod.section(cfg, "service").runtime_dir)


def cmd_run(args: argparse.Namespace) -> int:
    import fcntl
    import os

    from recorder.identity import IdentityError
    from recorder.journal import JournalError

    cfg = config_mod.load(args.config)
    _selection(args)   # a bad device selection is refused before anything is opened
    try:
        _require_key(args, cfg)
    except IdentityError as exc:
        return _evidence_open_failed(exc, _key_dir(args, cfg))
    rt = _runtime(cfg)
    try:
        rt.mkdir(parents=True, exist_ok=True)
        lock = open(rt / "service.pid", "a+")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        error(f"a service is already running ({rt / 'service.pid'})")
        return EXIT_FAIL
    except OSError as exc:
        error(f"cannot use runtime directory {rt}: {exc}")
        return EXIT_FAIL
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    try:
        service, out = _open_service(args, cfg)
    except (IdentityError, JournalError, OSError) as exc:
        return _evidence_open_failed(exc, _key_dir(args, cfg))
    status_file = rt / "status.txt"
    service.status_sink = lambda result: _write_atomic(status_file, result.to_text() + "\n")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop())
    signal.signal(signal.SIGUSR1, lambda *_: service.check_requested.set())
    watchdog = _supervise(service)
    docking = None if args.sim else _dock_watcher(cfg, service)
    until = None
    bench = server = None
    try:
        service.boot()
        if args.console or args.bench_socket:
            try:
                bench, server = _start_bench(args, rt, service)
            except OSError as exc:   # the socket path is taken, or cannot be made
                error(f"bench console: {exc}")
                return EXIT_FAIL
        watchdog.notifier.ready("recording service up")
        if args.duration is not None:
            until = service.clock() + int(args.duration * 1e9)
        service.run(until)
    finally:
        watchdog.notifier.stopping()
        watchdog.stop()
        if docking is not None:
            docking.close()
        service.shutdown("stop")
        if bench is not None:
            bench.close()
        if server is not None:
            server.close()
        service.dev.close()
        lock.close()
    print(out)
    return EXIT_OK


def _start_bench(args: argparse.Namespace, rt: Path, service: Service) -> tuple[Bench, BenchServer | None]:
    """The bench console (``--console``) and/or its socket (``--bench-socket``) on the service."""
    from firmware.bench import console
    from firmware.bench.rig import Bench
    from firmware.bench.server import BenchServer

    bench = Bench(service)
    server = None
    if args.bench_socket:
        path = rt / args.bench_socket if args.bench_socket == _DEFAULT_SOCKET else args.bench_socket
        try:
            server = BenchServer(bench, path)
        except OSError:
            bench.close()
            raise
    if args.console:
        console.start(bench, service.stop)
    return bench, server


def _supervise(service: Service) -> Watchdog:
    """systemd watchdog: pinged only while the service loop keeps going round (a hung
    pipeline stops the pings, systemd restarts the unit, and the next boot record says
    the previous session did not end cleanly)."""
    from firmware.watchdog import Heartbeat, SystemdNotifier, Watchdog

    loop = Heartbeat("service-loop")
    service.tick_hooks.append(lambda now_ns: loop.beat())
    watchdog = Watchdog(SystemdNotifier.from_environment())
    watchdog.watch(loop)
    watchdog.start()
    return watchdog


def _dock_watcher(cfg: Config, service: Service) -> DockWatcher | None:
    """On the Pi: dock when a host configures the USB gadget, and serve the dock link."""
    from firmware.dock_link import DockLink
    from firmware.docking import DockWatcher
    from hw.usb_gadget import UsbHostLink

    settings = config_mod.section(cfg, "dock")
    if not settings.enabled:
        return None
    key_file = Path(cfg["identity"]["key_dir"]) / "device-key.pem"
    gadget = config_mod.section(cfg, "gadget")   # the controller the gadget unit binds
    host = UsbHostLink(gadget.udc, gadget.udc_class_dir)
    watcher = DockWatcher(host, service.dock, service.undock,
                          lambda: DockLink(settings, service.ev, key_file=key_file))
    service.tick_hooks.append(watcher.tick)
    return watcher


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def cmd_status(args: argparse.Namespace) -> int:
    """Ask the running service for a fresh self-check (SIGUSR1), or run one here if none runs."""
    import fcntl
    import os
    import time

    cfg = config_mod.load(args.config)
    rt = _runtime(cfg)
    pid_file = rt / "service.pid"
    if pid_file.exists():
        with open(pid_file) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                running = None
            except BlockingIOError:
                running = int(f.read().strip() or 0) or None
        if running:
            status = rt / "status.txt"
            before = status.stat().st_mtime_ns if status.exists() else 0
            os.kill(running, signal.SIGUSR1)
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                if status.exists() and status.stat().st_mtime_ns != before:
                    text = status.read_text()
                    sys.stdout.write(text)
                    return EXIT_OK if "NO-GO" not in text.splitlines()[0] else EXIT_FAIL
                time.sleep(0.1)
            error(f"the service (pid {running}) did not answer within {args.timeout:.0f} s")
            return EXIT_FAIL
    from recorder.identity import IdentityError
    from recorder.journal import JournalError
    try:
        _require_key(args, cfg)   # before the evidence directory is created
        service, _ = _open_service(args, cfg)
    except (IdentityError, JournalError, OSError) as exc:
        return _evidence_open_failed(exc, _key_dir(args, cfg))
    try:
        result = service.boot()
    finally:
        service.shutdown("status")
    sys.stdout.write(result.to_text() + "\n")
    return EXIT_OK if result.go else EXIT_FAIL


def cmd_config_check(args: argparse.Namespace) -> int:
    config_mod.load(args.file)
    return EXIT_OK


def cmd_config_defaults(args: argparse.Namespace) -> int:
    sys.stdout.write(config_mod.render_defaults())
    return EXIT_OK


def cmd_record(args: argparse.Namespace) -> int:
    from firmware import hardware
    from recorder.identity import IdentityError

    cfg = config_mod.load(args.config)
    try:
        _require_key(args, cfg)   # before the evidence directory is created
    except IdentityError as exc:
        return _evidence_open_failed(exc, _key_dir(args, cfg))
    selection = _selection(args, gps_default="sim" if args.sim and args.sim_gps else None)
    out = args.out or Path(cfg["storage"]["dir"])
    out = config_mod.check_output_dir(out, "--out" if args.out else f"{args.config}: storage.dir")
    devices = hardware.build_devices(cfg, selection, realtime=not (args.sim and args.fast),
                                     wav=args.audio_wav, camera_stalls=args.camera_stall,
                                     mic_dead_from=args.mic_dead_from, gps_scenario=args.sim_gps)
    try:
        return _record(args, cfg, out, devices)
    finally:
        devices.close()


def _record(args: argparse.Namespace, cfg: Config, out: Path, devices: Devices) -> int:
    from recorder.identity import IdentityError
    from recorder.journal import JournalError
    from recorder.pipeline import Pipeline
    from recorder.segmenter import StorageError

    evidence = None
    if not args.no_seal:
        try:
            evidence = _open_evidence(args, cfg, out, devices)
        except (IdentityError, JournalError, OSError) as exc:
            return _evidence_open_failed(exc, _key_dir(args, cfg))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    reserve = cfg["storage"]["reserve_mb"] * 1024 * 1024
    pipeline = Pipeline(config_mod.pipeline_settings(cfg), devices.camera, devices.microphone,
                        devices.timebase, devices.wall_clock, out, stop=stop,
                        position=devices.position,
                        sink=evidence.sealer if evidence else None,
                        on_event=evidence.record if evidence else None,
                        storage_low=(lambda: evidence.store.nearly_full(reserve)) if evidence else None)
    progress = _Progress(pipeline, args.duration, cfg["video"]["fps"]) if sys.stderr.isatty() else None
    status = EXIT_OK
    try:
        results = pipeline.run(args.duration)
        if any(r.cause == "storage-full" for r in results):
            error("storage nearly full: recording stopped, dock the device")
            status = EXIT_STORAGE
    except StorageError as exc:
        error(f"storage failed: {exc}")
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

    def __init__(self, pipeline: Pipeline, duration: float | None, fps: int) -> None:
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
    from firmware.memory import disable_transparent_huge_pages, pin_mmap_threshold

    pin_mmap_threshold()
    disable_transparent_huge_pages()
    from recorder.journal import EvidenceInUse

    parser = build_parser()
    args = parser.parse_args(argv)
    _merge_global_options(parser, args)
    _setup_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    try:
        status: int = args.func(args)   # the subcommand's exit code
        return status
    except EvidenceInUse as exc:   # another writer holds the evidence root (journal.log flock)
        error(str(exc))
        return EXIT_IN_USE
    except config_mod.OutputDirUnusable as exc:   # storage, not configuration (README: 4)
        error(str(exc))
        return EXIT_STORAGE
    except config_mod.ConfigError as exc:
        error(str(exc))
        return EXIT_CONFIG


def _merge_global_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options given before the command count as if given after it."""
    args.verbose = getattr(args, "verbose", 0) + args.global_verbose
    args.quiet = getattr(args, "quiet", 0) + args.global_quiet
    if args.global_config is not None:
        if not hasattr(args, "config"):
            parser.error(f"--config does not apply to '{args.command}'")
        if args.config is not None and args.config != args.global_config:
            parser.error("--config given twice with different files")
        args.config = args.global_config
