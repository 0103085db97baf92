"""What running a job says back, and what a claimed job is, shared by the job runner and the use
cases it runs (the Celery tasks and the embedded runner translate these into their own terms)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Literal

from db.models import Job

PARSER_VERSION = "dxa-monitor 0.1.0"  # stored with every file: what read it
WORKER_CRASH = "worker_crash"  # quarantine reason: the file stopped its worker too often
STORE_REFUSED = "store_refused"  # quarantine reason: the database refused a parsed value

FileOutcome = Literal["ingested", "duplicate", "quarantined", "held", "retry", "skipped"]


@dataclass(frozen=True)
class JobResult:
    job_id: int
    kind: str
    outcome: FileOutcome
    detail: str
    source_file_id: int | None = None
    patient_id: int | None = None


@dataclass(frozen=True)
class ClaimedJob:
    """A job as it was claimed (plain values: the claim's session is closed before it runs)."""

    id: int
    kind: str
    attempts: int
    source_file_id: int | None
    patient_id: int | None

    @classmethod
    def of(cls, job: Job) -> ClaimedJob:
        return cls(job.id, job.kind, job.attempts, job.source_file_id, job.patient_id)


def worker_name() -> str:
    """ "host:pid", what `db.jobs.worker_gone` reads back to tell whether a claimer has died."""
    return f"{socket.gethostname()}:{os.getpid()}"
