"""Exports made in the background for the web (S7): the form is answered as soon as its checks
pass, and the clerk's page follows the job until the package is written.

A case of several hours is gigabytes: written inside the request, the browser waited minutes
with nothing to show (and a proxy could give up while the export went on). The checks (role,
form, selection, the S8 copy access, registered) stay in the request, so a refusal is still the
audited 403 page; ``station.export.package.make`` runs in a thread of this server. In memory:
a restart forgets the jobs, and what a killed export left is removed by the next export into
the directory (package module docstring, "Faults"). Only the clerk who started a job sees it.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from station.app import Station
from station.db import models as m
from station.errors import StationError, Unavailable
from station.export.package import Prepared, make

log = logging.getLogger(__name__)

MAX_RUNNING = 2          # exports write one at a time per directory anyway (its lock); the rest queue there
KEEP_FINISHED = 50


@dataclass
class ExportJob:
    id: str
    username: str
    name: str
    bytes_to_copy: int
    started: float = field(default_factory=time.monotonic)
    state: str = "running"            # running | done | failed
    export_id: int | None = None
    error: str | None = None

    @property
    def seconds(self) -> int:
        return int(time.monotonic() - self.started)


class ExportJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()

    def start(self, st: Station, user: m.User, prep: Prepared, out: Path) -> ExportJob:
        """Unavailable when ``MAX_RUNNING`` exports are being written already."""
        with self._lock:
            if sum(j.state == "running" for j in self._jobs.values()) >= MAX_RUNNING:
                raise Unavailable(f"{MAX_RUNNING} exports are being written; start this one when one has finished")
            job = ExportJob(secrets.token_urlsafe(12), user.username, prep.name, prep.bytes_to_copy)
            self._jobs[job.id] = job
            finished = [j.id for j in self._jobs.values() if j.state != "running"]
            for old in finished[:max(0, len(finished) - KEEP_FINISHED)]:
                del self._jobs[old]
        threading.Thread(target=self._run, args=(job, st, user, prep, out), name=f"export-{job.id}",
                         daemon=True).start()
        return job

    @staticmethod
    def _run(job: ExportJob, st: Station, user: m.User, prep: Prepared, out: Path) -> None:
        try:
            job.export_id = make(st, user, prep, out).export_id
            job.state = "done"
        except StationError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:          # a thread has nobody to raise to: said on the clerk's page
            log.exception("export %s failed", job.name)
            job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"

    def get(self, job_id: str, username: str) -> ExportJob | None:
        """The job, if ``username`` started it."""
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.username == username else None
