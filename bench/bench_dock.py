"""Offload throughput over a veth link: the dock path (TLS 1.3 + Range + verify + receipt) vs a plain copy.

Two network namespaces joined by a veth pair (as in tests/test_dock_e2e.py). The
same sealed segments are moved twice: by ``dockstation dock`` from ``bodycam dock
serve``, and by a bare TCP ``socket.sendfile`` sender to a receiver that writes
them to disk (no TLS, no hashing, no verification). Both sides are Python
processes started the same way. Prints both rates and their ratio. Needs root
(``ip netns``); run:  .venv/bin/python bench/bench_dock.py [--seconds 60] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.netns import PYTHON, ROOT, DockWorld, VethPair, env  # noqa: E402

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60, help="length of the simulated recording")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-dock-"))
    pair = VethPair()
    try:
        world = DockWorld.create(base)
        evidence, key_dir = base / "evidence", base / "identity"
        cfg = base / "bodycam.toml"
        cfg.write_text('[video]\nwidth = 640\nheight = 360\n[segment]\nseconds = 10\n'
                       f'[dock]\nlisten_address = "{pair.dev_addr}"\nport = 8443\nca_file = "{world.ca_file}"\n'
                       f'cert_file = "{base / "dev-cert.pem"}"\n')
        run = dict(cwd=ROOT, env=env(), capture_output=True, text=True, check=True)
        subprocess.run([PYTHON, "-m", "firmware", "record", "--sim", "--fast", "--duration", str(args.seconds),
                        "--config", str(cfg), "--out", str(evidence), "--key-dir", str(key_dir), "--provision"],
                       **run)
        pem = subprocess.run([PYTHON, "-m", "firmware", "identity", "export", "--key-dir", str(key_dir)],
                             **run).stdout.encode()
        world.device_cert(pem)
        segs = [p for p in evidence.rglob("*.ts")]
        nbytes = sum(p.stat().st_size for p in segs) + (evidence / "journal.log").stat().st_size
        print(f"payload: {len(segs)} segments + journal, {nbytes / 1e6:.1f} MB")
        dock_rates, plain_rates = [], []
        for i in range(args.repeat):
            # --- dock path, on a fresh copy of the evidence and a fresh dock store
            ev = base / f"ev{i}"
            shutil.copytree(evidence, ev)
            world.store = base / f"store{i}"
            world.register(pem)
            dock_cfg = world.dock_config(pair.dev_addr, 8443, name=f"dock{i}.toml")
            serve = pair.popen(pair.dev_ns, PYTHON, "-m", "firmware", "dock", "serve", "--config", str(cfg),
                               "--evidence", str(ev), "--key-dir", str(key_dir), cwd=ROOT, env=env(),
                               stdout=subprocess.PIPE, text=True)
            serve.stdout.readline()
            t0 = time.perf_counter()
            r = pair.run(pair.dock_ns, PYTHON, "-m", "dockstation", "dock", "--config", str(dock_cfg),
                         cwd=ROOT, env=env())
            dt_dock = time.perf_counter() - t0
            serve.terminate()
            serve.wait()
            assert json.loads(r.stdout)["status"] == "ok", r.stdout
            # --- plain TCP copy of the same files
            out = base / f"plain{i}"
            out.mkdir()
            sender = pair.popen(pair.dev_ns, PYTHON, "-c", SENDER, str(evidence), "9000", pair.dev_addr,
                                stdout=subprocess.PIPE, text=True)
            sender.stdout.readline()
            t0 = time.perf_counter()
            got = pair.run(pair.dock_ns, PYTHON, "-c", RECEIVER, pair.dev_addr, "9000", str(out))
            dt_plain = time.perf_counter() - t0
            sender.wait()
            assert int(got.stdout) == nbytes, (got.stdout, nbytes)
            dock_rates.append(nbytes / dt_dock / 1e6)
            plain_rates.append(nbytes / dt_plain / 1e6)
            print(f"run {i}: dock {dt_dock:.2f} s ({dock_rates[-1]:.1f} MB/s), "
                  f"plain {dt_plain:.2f} s ({plain_rates[-1]:.1f} MB/s)")
        d, p = sorted(dock_rates)[len(dock_rates) // 2], sorted(plain_rates)[len(plain_rates) // 2]
        print(f"median: dock offload {d:.1f} MB/s (TLS + Range + verify + S3 + ledger + receipt + purge), "
              f"plain TCP copy {p:.1f} MB/s; dock/plain = {d / p:.2f}")
    finally:
        pair.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
