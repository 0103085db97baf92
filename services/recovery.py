"""Recovery: put back on its way everything a crash left half-done. Safe to run at any time.

- jobs `running` whose worker process on this host is gone (`db.jobs.worker_gone`), or whose
  heartbeat (`services.liveness`) stopped for `stale_after` (default `db.operations.STALE_AFTER`,
  any host), are queued again (their attempts count, so a file that kills workers ends in
  quarantine);
- files in `work/` whose row already names their final place are moved there;
- files in `work/` the database does not know are registered as new arrivals;
- queued jobs whose message the broker most likely lost are sent again (the sweeper).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from db.files import get_source_file
from db.jobs import lost_dispatches, stamp_dispatched, worker_gone
from db.models import Job
from db.operations import STALE_AFTER
from services.bytestore import in_database
from services.context import Context
from services.files import move_durably, read_error_words, readable_sidecar, sha256_of, write_sidecar
from services.ingestion import sidecar
from services.intake import register_claimed

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def recover(ctx: Context, *, stale_after: timedelta | None = None) -> dict[str, int]:
    """Jobs and files both: what a process runs as it starts, before it runs anything."""
    counts = {"requeued": recover_jobs(ctx, stale_after=stale_after), "moved": 0, "registered": 0}
    counts.update(recover_files(ctx))
    return counts


def recover_jobs(ctx: Context, *, stale_after: timedelta | None = None) -> int:
    """Requeue `running` jobs whose worker died (a process of this host that is gone) or went
    silent (no heartbeat for `stale_after`, any host), and hand them to the workers again (a no-op
    in embedded mode, where the table is the queue). Their attempts go on counting."""
    requeued: list[tuple[int, str]] = []
    silent_since = _now() - (stale_after or STALE_AFTER)
    with ctx.sessions.begin() as session:
        running = session.scalars(select(Job).where(Job.state == "running").with_for_update(skip_locked=True))
        for job in running:
            gone = worker_gone(job.worker)
            if gone or job.updated_at < silent_since:
                log.info("job %s taken over: its worker %s", job.id, "is gone" if gone else "fell silent")
                job.state = "queued"
                job.worker = None
                requeued.append((job.id, job.kind))
                if job.source_file is not None and job.source_file.status == "processing":
                    job.source_file.status = "pending"
    for job_id, kind in requeued:
        ctx.submit(job_id, kind)
    return len(requeued)


def recover_files(ctx: Context, *, settled_for: timedelta | None = None) -> dict[str, int]:
    """Finish moves a crash interrupted, and register files claimed but never recorded.

    Without `settled_for` (a process starting up, before it runs anything): every file in
    `work/`. With it (the periodic sweeper, which runs beside live jobs and the watcher): only
    files whose row finished at least that long ago are moved (a live job may be between its
    commit and its move), and unknown files are left alone (the watcher may be between its claim
    and its commit); the watcher registers those when it starts.
    """
    counts = {"moved": 0, "registered": 0}
    work_dir = ctx.settings.work_dir
    cutoff = _now() - settled_for if settled_for is not None else None
    if work_dir.is_dir():
        for path in sorted(work_dir.iterdir()):
            if not path.is_file() or path.name.endswith(".partial"):
                continue
            try:
                sha = sha256_of(path)
            except OSError as exc:  # one file that cannot be read stops no start-up and no back-load
                log.warning("a file in work/ could not be read (%s); left there", read_error_words(exc))
                continue
            with ctx.sessions() as session:
                row = get_source_file(session, sha)
                known = row is not None
                target = row.stored_path if row is not None else None
                status = row.status if row is not None else None
                finished = row.finished_at if row is not None else None
                side = sidecar(row, row.reason_code or "", row.reason_text or "") if row is not None else None
            if not known:
                if cutoff is None:
                    register_claimed(ctx, path, path.name)
                    counts["registered"] += 1
            elif in_database(target):  # registered with its bytes; the claim's local copy is spare
                path.unlink(missing_ok=True)
            elif target and target != str(path) and status in ("ingested", "duplicate", "quarantined"):
                if cutoff is not None and (finished is None or finished > cutoff):
                    continue
                _finish_move(path, Path(target), side if status == "quarantined" else None)
                counts["moved"] += 1
    return counts


def _finish_move(path: Path, dest: Path, sidecar: dict[str, Any] | None) -> None:
    """Put a committed file where its row says; a quarantined one gets its sidecar too (the crash
    may have come before it was written)."""
    if sidecar is not None and not readable_sidecar(dest):  # missing, or cut by a kill mid-write
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_sidecar(dest, sidecar)
    if dest.exists():
        path.unlink()
    else:
        move_durably(path, dest)


def resend_lost_jobs(
    ctx: Context,
    *,
    broker_idle: bool,
    min_age: timedelta = timedelta(seconds=20),
    max_age: timedelta = timedelta(minutes=10),
) -> list[tuple[int, str]]:
    """The sweeper's re-send: queued jobs whose message is most likely lost (`db.jobs.lost_dispatches`)
    are stamped as dispatched now and sent again; a job merely waiting behind a backlog is not."""
    with ctx.sessions.begin() as session:
        lost = lost_dispatches(session, min_age=min_age, max_age=max_age, broker_idle=broker_idle)
        stamp_dispatched(session, [job_id for job_id, _ in lost])
    for job_id, kind in lost:
        ctx.submit(job_id, kind)
    return lost
