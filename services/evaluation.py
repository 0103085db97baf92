"""Evaluation of a patient: load the history, run the pure core (`monitor.evaluate`), save the
comparisons, flags and next scan, all under the patient's lock in one transaction.

Every caller evaluates through `evaluate` (a queued job, a therapy changed on a page, the daily
refresh, the test seeds); work that can wait is queued through `services.queue` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.calibration import PrecisionRepeat
from db.history import Verdict, load_histories, save_evaluations
from db.jobs import finish_job_id, finish_job_ids
from db.models import Patient
from db.patients import lock_patients
from monitor.evaluate import evaluate_patient
from monitor.precision import precision_study
from services.context import Context
from services.outcomes import ClaimedJob, JobResult
from services.queue import queue_evaluations

log = logging.getLogger(__name__)


def _precision(repeats: Iterable[PrecisionRepeat]) -> tuple[float, float]:
    grouped: dict[tuple[str, str], list[float]] = {}
    for r in repeats:
        grouped.setdefault((r.technologist, r.patient_code), []).append(r.bmd)
    # Studies were checked for enough degrees of freedom when saved; here only recompute.
    values = [v for v in grouped.values() if len(v) >= 2]
    result = precision_study("stored", values, min_degrees_of_freedom=1)
    return result.rms_sd_g_cm2, result.lsc_g_cm2


# Patients per transaction in the daily refresh: statements and commits are paid per chunk, while
# the patients' locks (and on SQLite the writer's) are held only for a chunk's time, well under a
# second.
REFRESH_CHUNK = 200


def evaluate(ctx: Context, patient_id: int, today: date | None = None, *, job_id: int | None = None) -> None:
    """Recompute one patient's comparisons, flags and next scan (same rows when run twice); with
    `job_id`, that evaluation job is marked done in the same commit."""
    with ctx.sessions.begin() as session:
        _evaluate_in_batch(ctx, session, [patient_id], today or date.today())
        if job_id is not None:
            finish_job_id(session, job_id)


def _evaluate_in_batch(ctx: Context, session: Session, patient_ids: Sequence[int], today: date) -> list[int]:
    """Evaluate patients in the caller's transaction; returns their ids in lock order. LookupError
    when one of them does not exist (any longer)."""
    # Lock first, read second: an evaluation that read the history before a concurrent store
    # committed must not save its stale result over a newer evaluation's (PostgreSQL; SQLite's
    # BEGIN IMMEDIATE already serialises the whole transaction). All of a batch's patients in one
    # statement, in the order an ingest batch stores them (identifier, issuer): a store and a
    # batch of evaluations then never wait on each other in a circle.
    ids = list(dict.fromkeys(patient_ids))
    patients = lock_patients(session, ids)
    if len(patients) != len(ids):
        raise LookupError("no such patient")
    ordered = [p.id for p in patients]
    histories = load_histories(session, ordered, precision_calculator=_precision, patients=patients)
    verdicts: list[Verdict] = []
    for pid in ordered:
        history = histories[pid]
        result = evaluate_patient(
            history.exams,
            history.therapies,
            history.lscs,
            history.cross_calibrations,
            ctx.monitoring,
            today,
            birth_date=history.birth_date,
            vendor_lscs=history.vendor_lscs,
        )
        verdicts.append(Verdict(pid, result, {e.exam_id for e in history.exams}))
    save_evaluations(session, verdicts)
    return ordered


def evaluate_jobs(ctx: Context, jobs: Sequence[ClaimedJob]) -> list[JobResult]:
    """A batch of evaluation jobs in one transaction (one commit, and a handful of statements for
    the whole batch instead of a dozen per patient), the patients locked in patient order so two
    batches never wait on each other in a circle. Should the batch fail (one patient's data, a
    lock conflict), each job runs again in its own transaction, so one patient cannot hold back
    the others; a fault of the database raises from there."""
    if len(jobs) == 1:
        return [evaluate_job(ctx, jobs[0])]
    today = date.today()
    ordered = list(jobs)
    try:
        with ctx.sessions.begin() as session:
            ids = [job.patient_id for job in jobs if job.patient_id is not None]
            if len(ids) != len(jobs):
                raise ValueError("an evaluation job without a patient")
            position = {pid: n for n, pid in enumerate(_evaluate_in_batch(ctx, session, ids, today))}
            ordered.sort(key=lambda job: position[job.patient_id or 0])
            finish_job_ids(session, [job.id for job in ordered])
    except Exception as exc:
        log.warning("a batch of %d evaluations failed (%s); running them one by one", len(jobs), type(exc).__name__)
        return [evaluate_job(ctx, job) for job in ordered]
    return [JobResult(job.id, job.kind, "ingested", "evaluated", patient_id=job.patient_id) for job in ordered]


def evaluate_job(ctx: Context, job: ClaimedJob) -> JobResult:
    assert job.patient_id is not None
    evaluate(ctx, job.patient_id, job_id=job.id)
    return JobResult(job.id, job.kind, "ingested", "evaluated", patient_id=job.patient_id)


def evaluate_all(ctx: Context, today: date | None = None, *, chunk: int = REFRESH_CHUNK) -> int:
    """Every patient again: the daily refresh that moves due and overdue with the calendar, in
    chunks of patients, one transaction each. A chunk that fails runs one patient per transaction
    (one patient's data cannot hold back the others; a fault of the database raises from there)."""
    day = today or date.today()
    with ctx.sessions() as session:
        ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        try:
            with ctx.sessions.begin() as session:
                _evaluate_in_batch(ctx, session, part, day)
        except Exception as exc:
            log.warning("a chunk of %d evaluations failed (%s); running them one by one", len(part), type(exc).__name__)
            for patient_id in part:
                evaluate(ctx, patient_id, day)
    return len(ids)


def evaluate_now(ctx: Context, patient_id: int) -> str | None:
    """Re-evaluate at once (a clinician waiting for the recalculated next scan); when that fails,
    queue it for the runners instead. Returns a warning to show when it had to be queued."""
    try:
        evaluate(ctx, patient_id)
    except Exception:
        log.exception("re-evaluation failed; queued for the job runners")
        queue_evaluations(ctx, [patient_id])
        return "The change was saved but re-evaluation failed; it has been queued and will be retried."
    return None
