"""The one way work is queued: a use case's transaction, and the jobs it queued sent on after
the commit.

Every use case that makes work for the job runners (a stored file's patient to evaluate, a saved
precision study's patients, a quarantined file to parse again) queues it through `Work`, from a
page, a command or a worker alike. The job row is committed with the change that caused it, so a
crash never loses the work; only then is its id handed to `ctx.submit`: the Celery task is sent at
once in the scaled mode, while the embedded runner finds the row itself. A message lost on the
way is re-sent by the sweeper (`services.recovery.resend_lost_jobs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from db.jobs import enqueue_ingest, queue_evaluation_once, queue_evaluations_once
from services.context import Context


@dataclass
class Work:
    """One use case's transaction: its session, and the jobs to send once it has committed."""

    session: Session
    outbox: list[tuple[int, str]] = field(default_factory=list)

    def queue_evaluation(self, patient_id: int) -> None:
        """Queue the patient's re-evaluation. A patient with one queued already is not queued
        twice: that job has not run yet, and reads what this transaction commits when it does."""
        job_id = queue_evaluation_once(self.session, patient_id)
        if job_id is not None:
            self.outbox.append((job_id, "evaluate_patient"))

    def queue_evaluations(self, patient_ids: Iterable[int]) -> int:
        """`queue_evaluation` for several patients in one statement, their keys taken in the
        order given (a batch gives them sorted, so two batches never wait in a circle)."""
        ids = list(patient_ids)
        self.outbox += [(job_id, "evaluate_patient") for job_id in queue_evaluations_once(self.session, ids)]
        return len(ids)

    def queue_ingest(self, source_file_id: int) -> int:
        job = enqueue_ingest(self.session, source_file_id)
        self.outbox.append((job.id, "ingest_file"))
        return job.id


@contextmanager
def unit_of_work(ctx: Context) -> Iterator[Work]:
    """`with unit_of_work(ctx) as work:` one transaction (committed on leaving the block, rolled
    back on an exception); the jobs it queued are submitted after the commit, never before."""
    with ctx.sessions.begin() as session:
        work = Work(session)
        yield work
    ctx.submit_all(work.outbox)


def queue_evaluations(ctx: Context, patient_ids: Iterable[int]) -> int:
    """Queue these patients' re-evaluation in a transaction of its own; how many were named."""
    with unit_of_work(ctx) as work:
        return work.queue_evaluations(patient_ids)
