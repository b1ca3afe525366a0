"""A throwaway PostgreSQL cluster from Debian's server: initdb + pg_ctl on a temporary directory.

No TCP: the server listens on a Unix socket in its own directory only. As root the cluster
runs as the ``postgres`` user (initdb refuses root). ``PgCluster.stop(mode="immediate")``
is the "database server goes away" of the fault tests; ``start()`` brings it back.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PgCluster:
    def __init__(self, base: Path | None = None) -> None:
        """``base`` must be reachable by the ``postgres`` user; by default a new /tmp directory
        (pytest's own temporary directories are private to root)."""
        bindir = _bindir()
        if bindir is None:
            pytest.skip("PostgreSQL server not installed (Debian: postgresql; deploy/bootstrap-dev.sh)")
        self.bin = bindir
        base = base or Path(tempfile.mkdtemp(prefix="station-pg-"))
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.port = 5432
        self.as_root = os.geteuid() == 0
        base.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if self.as_root:
            shutil.chown(base, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
            os.chmod(base, 0o755)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        # fsync and full-page writes only matter when the *machine* crashes; the fault tests
        # crash the *server* (stop -m immediate), after which a committed row must still be
        # there, as on a production server. So commits wait for their WAL write()
        # (synchronous_commit stays on); with it off the WAL writer's ~200 ms of commits
        # vanished with the server and a test found its docking row gone.
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = ''\nunix_socket_directories = '{self.sock}'\nport = {self.port}\n"
                    "fsync = off\nsynchronous_commit = on\nfull_page_writes = off\nmax_connections = 200\n")
        self.start()

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._run("createdb", "-h", str(self.sock), "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@/{name}?host={self.sock}&port={self.port}"


    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster():
    """One cluster per test session; each test makes its own database (``create_database``)."""
    cluster = PgCluster()
    yield cluster
    cluster.destroy()
