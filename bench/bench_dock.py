"""Offload throughput over a veth link: the dock path (TLS 1.3 + Range + verify + receipt) vs a plain copy.

Two network namespaces joined by a veth pair (as in tests/test_dock_e2e.py). The
same sealed segments are moved twice: by ``station dock`` from ``bodycam dock
serve``, and by a bare TCP ``socket.sendfile`` sender to a receiver that writes
them to disk (no TLS, no hashing, no verification). Both sides are Python
processes started the same way, and both times are wall clock from process start
to exit. Prints both rates and their ratio.

``--concurrent N`` (default 4) then docks N devices at once into ONE station, as a
rack does: N device namespaces, each with its own veth link and its own ``bodycam
dock serve``, and N ``station dock --device-address ...`` processes started together.
It prints the aggregate rate (all bytes / wall time until the last one exits) and its
ratio to the single docking's rate. Single and rack runs alternate (single, rack, single,
rack, ...), and each rack run's ratio is to the single docking just before it: on a shared
machine the speed of both drifts between minutes-apart phases by more than the effect
measured. The summary gives the ratio of the medians and the median of the runs' ratios.

Each rate line also prints the CPU seconds (user+sys) per GB moved of each process kind:
``station dock`` (the station side, start-up included), ``bodycam dock serve`` (the device
side from the moment it listens: the purge included, its start-up not) and the plain copy's sender + receiver. Both
ends run on this machine, so a single docking already keeps more than one core busy; the
line after the single runs says how many, and so the most concurrent/single can reach
here (cores / that). CPU per byte is what decides the aggregate.

``--profile DIR`` runs every single ``station dock`` under cProfile (DIR/dock-<i>.prof;
read with ``python -m pstats``). Needs root (``ip netns``); run:

    .venv/bin/python bench/bench_dock.py [--minutes 20] [--segment-mb 5] [--repeat 3] [--concurrent 4]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.netns import PYTHON, ROOT, DockWorld, VethPair  # noqa: E402
from tests.netns import env as _test_env  # noqa: E402


def env() -> dict[str, str]:
    """As installed: bytecode cached (a development shell may set PYTHONDONTWRITEBYTECODE)."""
    e = _test_env()
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    return e

SENDER = r"""
import socket, sys, os
root, port = sys.argv[1], int(sys.argv[2])
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
srv = socket.create_server((sys.argv[3], port)); print("ready", flush=True)
conn, _ = srv.accept()
for path in files:
    size = os.path.getsize(path); name = os.path.relpath(path, root).encode()
    conn.sendall(len(name).to_bytes(2, "big") + name + size.to_bytes(8, "big"))
    with open(path, "rb") as f: conn.sendfile(f)
conn.close()
"""
RECEIVER = r"""
import socket, sys, os
host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port)); f = s.makefile("rb"); total = 0
while (h := f.read(2)):
    name = f.read(int.from_bytes(h, "big")).decode(); size = int.from_bytes(f.read(8), "big")
    dest = os.path.join(out, name); os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "wb") as o:
        left = size
        while left:
            chunk = f.read(min(1 << 20, left)); o.write(chunk); left -= len(chunk)
        o.flush(); os.fsync(o.fileno())
    total += size
print(total)
"""


class Device:
    """One simulated device: a shift of sealed segments in a signed journal, its key and ``dock serve`` config.

    The evidence is made by the recorder's own code (``recorder.journal`` + ``recorder.seal``:
    the same records, signatures and file attestations as a recording), with segments of
    ``segment_mb`` MB each (a real MPEG-TS segment from the test encoder, repeated to that
    size: the dock never parses media, it moves, hashes and verifies bytes), one every 10 s
    like the device's default; ``minutes`` of 1080p at the default 4 Mbit/s is about 5 MB
    per segment.
    """

    def __init__(self, base: Path, k: int, world: DockWorld, pair: VethPair) -> None:
        self.base, self.k, self.pair = base / f"device{k}", k, pair
        self.base.mkdir(parents=True)
        self.cfg = self.base / "bodycam.toml"
        self.cfg.write_text(
            f'[dock]\nlisten_address = "{pair.dev_addr}"\nport = 8443\nca_file = "{world.ca_file}"\n'
            f'cert_file = "{self.base / "dev-cert.pem"}"\n', encoding="utf-8")

    def build(self, world: DockWorld, minutes: float, segment_mb: float, sample: bytes) -> None:
        from common.clock import TimeQuality, TimeSample
        from recorder.segment_info import SegmentInfo
        from tests.media_fixture import FPS, FRAME_TICKS, RATE, TB, WALL0, new_device
        dev = new_device(self.base, "dev")
        self.evidence, self.key_dir, self.pem = dev.root, dev.key_dir, dev.pem
        size = int(segment_mb * 1e6)
        body = (sample * (size // len(sample) + 1))[:size]
        count = max(1, int(minutes * 6))
        frames, samples = 10 * FPS, 10 * RATE
        dev.journal.append("boot", {"firmware": "bench"})
        rid = f"bench{self.k}"
        dev.journal.append("recording-start", {"recording_id": rid})
        rdir = dev.store.recording_dir(rid)
        rdir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = rdir / f"{rid}_{i:05d}.ts"
            data = i.to_bytes(8, "big") + body[8:]        # every segment different
            path.write_bytes(data)
            mono0 = i * 10 * 10**9
            mono1 = mono0 + (frames - 1) * 10**9 // FPS
            dev.sealer.segment_closed(SegmentInfo(
                path=path, recording_id=rid, index=i, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                time_base=TB, first_pts=FRAME_TICKS * (FPS + i * frames),
                last_pts=FRAME_TICKS * (FPS + i * frames + frames - 1), frame_duration=FRAME_TICKS,
                video_frames=frames, first_sample=i * samples, audio_samples=samples,
                wall_start=TimeSample(mono0, WALL0 + mono0, TimeQuality.NTP, 0.001),
                wall_end=TimeSample(mono1, WALL0 + mono1, TimeQuality.NTP, 0.001), final=(i == count - 1)))
        dev.journal.append("recording-stop", {"recording_id": rid, "cause": "officer"})
        dev.journal.append("shutdown", {})
        dev.journal.close()
        from station.dock import pki
        pub = self.base / "dev.pub.pem"
        pub.write_bytes(self.pem)
        pki.init_device(world.ca_dir, pub, self.base / "dev-cert.pem")
        self.nbytes = sum(p.stat().st_size for p in self.evidence.rglob("*") if p.is_file())
        self.files = count

    def serve(self, tag: str) -> tuple[subprocess.Popen[str], Path]:
        """A fresh copy of the evidence (the dock purges what it receipts), served on the link."""
        ev = self.base / f"ev-{tag}"
        shutil.copytree(self.evidence, ev, copy_function=_link_segments)
        serve = self.pair.popen(self.pair.dev_ns, PYTHON, "-m", "firmware", "dock", "serve", "--config",
                                str(self.cfg), "--evidence", str(ev), "--key-dir", str(self.key_dir),
                                cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = serve.stdout.readline() if serve.stdout else ""
        assert line.startswith("listening"), line
        _SERVE_CPU0[serve.pid] = proc_cpu(serve.pid)      # its start-up is before the timed part
        return serve, ev

    def dock_cmd(self, dock_cfg: Path, profile: Path | None = None) -> list[str]:
        prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
        return ["ip", "netns", "exec", self.pair.dock_ns, PYTHON, *prof, "-m", "station", "dock",
                "--config", str(dock_cfg), "--device-address", self.pair.dev_addr, "--wait", "10"]


def _link_segments(src: str, dst: str) -> None:
    """Segments hard-linked (the device only unlinks them), the journal copied (it appends)."""
    if src.endswith(".ts"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def new_station(world: DockWorld, base: Path, tag: str, devices: list[Device]) -> Path:
    world.store = base / f"store-{tag}"
    cfg = world.dock_config("10.77.0.1", 8443, name=f"dock-{tag}.toml")   # init_station: store, DB, key
    # the tests' 2 s timeout is too short for the device to purge a shift's files under load
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("timeout_s = 2.0", "timeout_s = 60.0"), encoding="utf-8")
    for d in devices:
        world.register(d.pem)
    return cfg


class Cpu:
    """CPU seconds (user, sys) by process kind, summed over the processes measured."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[float]] = {}

    def add(self, kind: str, user: float, system: float) -> None:
        u = self.kinds.setdefault(kind, [0.0, 0.0])
        u[0] += user
        u[1] += system

    def seconds(self, *kinds: str) -> float:
        return sum(sum(self.kinds.get(k, [0.0, 0.0])) for k in kinds)

    def line(self, nbytes: int) -> str:
        gb = nbytes / 1e9
        return ", ".join(f"{k} {u / gb:.2f}u+{s / gb:.2f}s CPU-s/GB" for k, (u, s) in self.kinds.items())


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, sys) seconds of a live process, all its threads (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def run_dock(cmd: list[str], cpu: Cpu | None) -> tuple[int, str, str]:
    """Run one ``station dock`` to its end: (exit code, stdout, stderr); its rusage into ``cpu``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=out, stderr=err)
        rc = wait_dock(p, cpu)
        out.seek(0)
        err.seek(0)
        return rc, out.read().decode(), err.read().decode()


def wait_dock(p: subprocess.Popen[bytes], cpu: Cpu | None) -> int:
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if cpu is not None:
        cpu.add("station-dock", ru.ru_utime, ru.ru_stime)
    return p.returncode


_SERVE_CPU0: dict[int, tuple[float, float]] = {}


def stop(serve: subprocess.Popen[str], cpu: Cpu | None = None) -> None:
    """Stop a ``dock serve``; its CPU since it listened into ``cpu``."""
    if cpu is not None:
        (u, s), (u0, s0) = proc_cpu(serve.pid), _SERVE_CPU0.get(serve.pid, (0.0, 0.0))
        cpu.add("device-serve", u - u0, s - s0)
    serve.terminate()
    serve.wait(timeout=10)


def check_ok(out: str) -> None:
    status = json.loads(out.strip().splitlines()[-1])["status"]
    assert status == "ok", out


def single(world: DockWorld, base: Path, dev: Device, i: int, profile: Path | None, cpu: Cpu) -> float:
    cfg = new_station(world, base, f"single{i}", [dev])
    serve, _ = dev.serve(f"single{i}")
    rc, out, err = 1, "", ""
    try:
        t0 = time.perf_counter()
        rc, out, err = run_dock(dev.dock_cmd(cfg, profile / f"dock-{i}.prof" if profile else None), cpu)
        dt = time.perf_counter() - t0
    finally:
        stop(serve, cpu if rc == 0 else None)
    assert rc == 0, (out, err)
    check_ok(out)
    return dt


def plain(base: Path, dev: Device, i: int, cpu: Cpu) -> float:
    out = base / f"plain{i}"
    out.mkdir()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pair = dev.pair
    sender = pair.popen(pair.dev_ns, PYTHON, "-c", SENDER, str(dev.evidence), "9000", pair.dev_addr,
                        stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None and sender.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    got = pair.run(pair.dock_ns, PYTHON, "-c", RECEIVER, pair.dev_addr, "9000", str(out))
    dt = time.perf_counter() - t0
    sender.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.add("plain-send+recv", after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)
    assert int(got.stdout) == dev.nbytes, (got.stdout, dev.nbytes)
    shutil.rmtree(out)
    return dt


def concurrent(world: DockWorld, base: Path, devs: list[Device], i: int, cpu: Cpu) -> float:
    cfg = new_station(world, base, f"rack{i}", devs)
    serves = [d.serve(f"rack{i}")[0] for d in devs]
    with contextlib.ExitStack() as files:
        outs = [(files.enter_context(tempfile.TemporaryFile()), files.enter_context(tempfile.TemporaryFile()))
                for _ in devs]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            t0 = time.perf_counter()
            procs = [subprocess.Popen(d.dock_cmd(cfg), cwd=ROOT, env=env(), stdout=o, stderr=e)
                     for d, (o, e) in zip(devs, outs, strict=True)]
            for p in procs:
                wait_dock(p, cpu)
            dt = time.perf_counter() - t0
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    p.wait()
            ok = bool(procs) and all(p.returncode == 0 for p in procs)
            for s in serves:
                stop(s, cpu if ok else None)
        texts = []
        for o, e in outs:
            o.seek(0)
            e.seek(0)
            texts.append((o.read().decode(), e.read().decode()))
    for p, (out, err) in zip(procs, texts, strict=True):
        assert p.returncode == 0, (out, err)
        check_ok(out)
    from station.audit.integrity import verify_station
    st = world.station()
    try:
        report = verify_station(st, files=True)
    finally:
        st.close()
    assert report.ok and report.files_checked == sum(d.files for d in devs), report.to_dict()
    return dt


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20,
                    help="length of each device's shift (one 10 s segment per 10 s; default 20)")
    ap.add_argument("--segment-mb", type=float, default=5.0,
                    help="MB per 10 s segment (default 5: 1080p at 4 Mbit/s, the device's default)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--concurrent", type=int, default=4, metavar="N",
                    help="devices docking at once into one station (0: single docking only)")
    ap.add_argument("--profile", type=Path, metavar="DIR", help="cProfile each single docking into DIR")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-dock-"))
    pairs: list[VethPair] = []
    try:
        world = DockWorld.create(base)
        n = max(1, args.concurrent)
        for k in range(n):
            pairs.append(VethPair(subnet=200 + k))
        devs = [Device(base, k, world, pairs[k]) for k in range(n)]
        from tests.media_fixture import write_ts
        write_ts(base / "sample.ts", 25, 250, 48000, 480000, size=(640, 360))   # 10 s of real MPEG-TS
        sample = (base / "sample.ts").read_bytes()
        for d in devs:
            d.build(world, args.minutes, args.segment_mb, sample)
        dev = devs[0]
        print(f"payload per device: {dev.files} segments + journal, {dev.nbytes / 1e6:.1f} MB")
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        dock_rates, plain_rates, agg, ratios = [], [], [], []
        cpu1, cpun = Cpu(), Cpu()
        wall1 = 0.0
        total = sum(x.nbytes for x in devs)
        rack = args.concurrent > 1
        # single and rack runs alternate, so each ratio compares runs seconds apart: on a shared
        # machine the speed drifts by more than the effect measured between minutes-apart phases
        for i in range(args.repeat):
            dt_dock = single(world, base, dev, i, args.profile, cpu1)
            dt_plain = plain(base, dev, i, cpu1)
            dock_rates.append(dev.nbytes / dt_dock / 1e6)
            wall1 += dt_dock
            plain_rates.append(dev.nbytes / dt_plain / 1e6)
            print(f"run {i}: dock {dt_dock:.2f} s ({dock_rates[-1]:.1f} MB/s), "
                  f"plain {dt_plain:.2f} s ({plain_rates[-1]:.1f} MB/s)", flush=True)
            if rack:
                dt = concurrent(world, base, devs, i, cpun)
                agg.append(total / dt / 1e6)
                ratios.append(agg[-1] / dock_rates[-1])
                print(f"rack run {i}: {len(devs)} devices, {total / 1e6:.1f} MB in {dt:.2f} s "
                      f"({agg[-1]:.1f} MB/s aggregate; {ratios[-1]:.2f}x run {i}'s single docking)", flush=True)
        one, p = median(dock_rates), median(plain_rates)
        print(f"median: dock offload {one:.1f} MB/s (TLS + Range + verify + S3 + ledger + receipt + purge), "
              f"plain TCP copy {p:.1f} MB/s; dock/plain = {one / p:.2f}")
        print(f"CPU, single docking: {cpu1.line(dev.nbytes * args.repeat)}")
        cores = cpu1.seconds("station-dock", "device-serve") / wall1
        print(f"one docking keeps {cores:.2f} cores busy on average (both ends, CPU-s / wall s): "
              f"on {os.cpu_count()} cores, concurrent/single can reach at most {(os.cpu_count() or 1) / cores:.2f}")
        if rack:
            a = median(agg)
            print(f"median: {len(devs)} concurrent dockings {a:.1f} MB/s aggregate; concurrent/single = "
                  f"{a / one:.2f} (medians), {median(ratios):.2f} (median of the runs' ratios, "
                  f"range {min(ratios):.2f}-{max(ratios):.2f})")
            print(f"CPU, {len(devs)} concurrent dockings: {cpun.line(total * args.repeat)}")
    finally:
        for pair in pairs:
            pair.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
