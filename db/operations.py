"""What an operator watches (`dxa status`, the QA operations page, Prometheus `/metrics`): jobs
by state, the oldest queued job, stuck jobs, files finished per hour, quarantine by reason.

One snapshot, read in one session, so the three views never disagree. Counts only: no file name,
patient or error text leaves here (the error text may come from a parser).

A job is *stuck* when it is `running` and its heartbeat (`updated_at`, refreshed by the worker
every `HEARTBEAT_S` while it runs) is older than `STALE_AFTER`: its worker is dead or cut off,
and the sweeper hands it to another worker (`services.recovery.recover_jobs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import AuditEvent, Job, SourceFile, utcnow

HEARTBEAT_S = 15.0  # a running job's worker refreshes the job's updated_at this often
STALE_AFTER = timedelta(seconds=60)  # four missed heartbeats: the worker is gone
JOB_STATES = ("queued", "running", "done", "failed")
FILE_STATES = ("pending", "processing", "ingested", "quarantined")


@dataclass(frozen=True)
class StuckJob:
    id: int
    kind: str
    worker: str | None
    silent_s: float  # since its last heartbeat


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    jobs: dict[str, int]
    files: dict[str, int]
    oldest_queued_s: float | None
    stuck: list[StuckJob]
    files_last_hour: int
    quarantine: dict[str, int]
    broker_depth: int | None = None  # messages waiting in the broker; None = embedded or unknown
    inbox_refused: int = 0  # inbox entries that are not regular files, recorded for QA (issue 11)
    extra: dict[str, float] = field(default_factory=dict)


def _age(now: datetime, then: datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


def stale_running_jobs(session: Session, *, now: datetime | None = None) -> list[StuckJob]:
    moment = now or utcnow()
    rows = session.execute(
        select(Job.id, Job.kind, Job.worker, Job.updated_at)
        .where(Job.state == "running", Job.updated_at < moment - STALE_AFTER)
        .order_by(Job.id)
    ).all()
    return [StuckJob(int(i), str(k), w, _age(moment, u)) for i, k, w, u in rows]


def snapshot(session: Session, *, now: datetime | None = None, broker_depth: int | None = None) -> Snapshot:
    moment = now or utcnow()
    jobs = dict.fromkeys(JOB_STATES, 0)
    jobs.update({str(s): int(n) for s, n in session.execute(select(Job.state, func.count()).group_by(Job.state))})
    files = dict.fromkeys(FILE_STATES, 0)
    files.update(
        {
            str(s): int(n)
            for s, n in session.execute(select(SourceFile.status, func.count()).group_by(SourceFile.status))
        }
    )
    oldest = session.scalar(select(func.min(Job.created_at)).where(Job.state == "queued"))
    finished = session.scalar(
        select(func.count())
        .select_from(SourceFile)
        .where(
            SourceFile.status.in_(("ingested", "quarantined")),
            SourceFile.finished_at >= moment - timedelta(hours=1),
        )
    )
    quarantine = {
        str(code or "unknown"): int(n)
        for code, n in session.execute(
            select(SourceFile.reason_code, func.count())
            .where(SourceFile.status == "quarantined")
            .group_by(SourceFile.reason_code)
            .order_by(SourceFile.reason_code)
        )
    }
    return Snapshot(
        at=moment,
        jobs=jobs,
        files=files,
        oldest_queued_s=_age(moment, oldest) if oldest is not None else None,
        stuck=stale_running_jobs(session, now=moment),
        files_last_hour=int(finished or 0),
        quarantine=quarantine,
        broker_depth=broker_depth,
        inbox_refused=int(
            session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "inbox_entry_refused")
            )
            or 0
        ),
    )
