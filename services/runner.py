"""Running jobs: claim them in the database, then run the use case of their kind.

A job is claimed before it runs, so a second delivery of the same Celery message, or a second
runner, finds it taken and does nothing. Jobs run in batches where that saves work: the embedded
runner claims up to `BATCH` of the oldest jobs of one kind (`run_batch`), a Celery task carries a
chunk of job ids (`run_jobs`); files of a batch are parsed one after the other and stored in one
transaction (`services.ingestion.ingest_batch`), evaluations likewise
(`services.evaluation.evaluate_jobs`). `run_job` and `run_next` run one job.

A job that has already been tried (its worker died with it, or it was requeued) runs alone, after
the rest of its batch: a file that kills its worker then takes no other file with it a second time.

On SQLite, whose writers queue on one lock, the embedded runner is one writer (`Pipeline`): it
registers the files the watcher claimed (handed to it, `Pipeline.hand`), claims them in batches
and hands them in parts to a parser thread (which drives the parse child, its requests written
ahead), stores the parts parsed meanwhile, and runs the evaluations the stores queued; threads
queueing on `BEGIN IMMEDIATE` for each other cost more than they parallelised (SQLite's busy wait
sleeps, and the thread that just committed takes the lock again first). A Celery task's chunk goes
through `services.stages.Overlap` instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from db.jobs import JobKindName, claim_job, claim_jobs, claim_next_job, claim_next_jobs, touch_running
from db.operations import HEARTBEAT_S
from services.context import Context
from services.evaluation import evaluate_job, evaluate_jobs
from services.ingestion import (
    ClaimedFile,
    ParsedFile,
    ingest_batch,
    ingest_claimed,
    parse_batch_ahead,
    start_ingest,
    start_ingests,
    store_batch,
)
from services.intake import Claim, UnreadableClaim, register_claims
from services.liveness import heartbeat
from services.logsafe import describe
from services.outcomes import ClaimedJob, JobResult, worker_name
from services.stages import ingest_overlapped, release, release_all, run_or_release

log = logging.getLogger(__name__)


def run_job(ctx: Context, job_id: int) -> JobResult | None:
    """Run one given job (a Celery delivery); None when it is not queued any more."""
    with ctx.sessions.begin() as session:
        job = claim_job(session, job_id, worker=worker_name())
        started = _start(ctx, session, ClaimedJob.of(job)) if job is not None else None
    return _execute_or_release(ctx, started) if started is not None else None


def run_next(ctx: Context, kinds: tuple[JobKindName, ...] | None = None) -> JobResult | None:
    """Run the oldest queued job (the embedded runner); None when there is none."""
    with ctx.sessions.begin() as session:
        job = claim_next_job(session, kinds=kinds, worker=worker_name())
        started = _start(ctx, session, ClaimedJob.of(job)) if job is not None else None
    return _execute_or_release(ctx, started) if started is not None else None


BATCH = 16  # jobs claimed together by a runner; a quiet inbox's single file is a batch of one


def run_batch(
    ctx: Context, limit: int = BATCH, kind: JobKindName | None = None, queued_before: datetime | None = None
) -> list[JobResult]:
    """Claim up to `limit` of the oldest queued jobs of one kind (of `kind`; queued by
    `queued_before`) and run them (the embedded runner); empty when there is none."""
    with ctx.sessions.begin() as session:
        jobs = claim_next_jobs(session, limit=limit, kind=kind, worker=worker_name(), queued_before=queued_before)
        started = [_start(ctx, session, ClaimedJob.of(job)) for job in jobs]
    return _execute_batch(ctx, started)


def run_jobs(ctx: Context, job_ids: Sequence[int]) -> list[JobResult]:
    """Run the given jobs (a Celery delivery of a chunk); those not queued any more are skipped."""
    with ctx.sessions.begin() as session:
        jobs = [ClaimedJob.of(job) for job in claim_jobs(session, job_ids, worker=worker_name())]
        started = _start_all(ctx, session, jobs)
    # A chunk's parse overlaps its store, part by part (a Celery worker process has no other work).
    return _execute_batch(ctx, started, ingest=ingest_overlapped)


def _start_all(
    ctx: Context, session: Session, jobs: Sequence[ClaimedJob]
) -> list[ClaimedJob | ClaimedFile | JobResult]:
    """`_start` for a claimed chunk, the ingest jobs' files marked `processing` in one statement."""
    files = iter(start_ingests(ctx, session, [job for job in jobs if job.kind == "ingest_file"]))
    return [next(files) if job.kind == "ingest_file" else job for job in jobs]


def _execute_batch(
    ctx: Context,
    started: Sequence[ClaimedJob | ClaimedFile | JobResult],
    ingest: Callable[[Context, Sequence[ClaimedFile]], list[JobResult]] = ingest_batch,
) -> list[JobResult]:
    results = [one for one in started if isinstance(one, JobResult)]
    files = [one for one in started if isinstance(one, ClaimedFile)]
    evaluations = [one for one in started if isinstance(one, ClaimedJob)]
    fresh = [one for one in files if one.job.attempts <= 1]
    groups: list[Sequence[ClaimedFile]] = [fresh] if fresh else []
    groups += [[one] for one in files if one.job.attempts > 1]
    for group in groups:
        ids = [one.job.id for one in group]
        results += run_or_release(ctx, ids, partial(ingest, ctx, group))
    if evaluations:
        ids = [one.id for one in evaluations]
        results += run_or_release(ctx, ids, partial(evaluate_jobs, ctx, evaluations))
    return results


EVALUATE_EVERY_S = 1.0  # the longest a queued evaluation waits while files keep coming
EVALUATE_WAITING_S = 0.25  # evaluations run while the writer would wait for a parse, at most this often
FIRST_CLAIM = 8  # files of the first claim after a quiet spell: its parse overlaps nothing, so it is short
MAX_CLAIM = 64  # the claim doubles up to this while the queue stays full
PART = 32  # files parsed, then stored, together (one transaction's statements and commit for them all)
LAST_PART = 8  # the same once the queue is drained: the last part's parse and store are a burst's tail
AHEAD_FILES = 128  # files claimed and not stored yet, beyond which the writer claims no more
EVALUATION_BATCH = 64  # evaluation jobs run together by the writer
# While a back-load keeps the queue full (a stretch), an evaluation waits until its job has been
# queued this long: a patient whose files keep coming (an archive's files of one patient are spread
# over its folders) is evaluated once per this time, not once a second (issue 13: 45 708 evaluations
# for 31 887 patients, a third of the writer's time). The queue drained, every evaluation runs.
SETTLE_S = 30.0


@dataclass
class _Parsing:
    """A part of claimed files handed to the parser thread."""

    job_ids: list[int]
    parsed: Future[list[ParsedFile]]


class Pipeline:
    """The one writer of the embedded runner on SQLite. Each `step` registers the files the watcher
    handed it (`hand`), claims the next files (while fewer than `AHEAD_FILES` wait to be stored)
    and hands them in parts to the parser thread, which drives the parse child with its requests
    written ahead (`services.ingestion.parse_batch_ahead`): the child parses outside this process's
    interpreter lock, from one file to the next, while this thread stores the oldest part parsed
    (one transaction each). Evaluations queued by the stores run every `EVALUATE_EVERY_S` while
    files keep coming (a patient's evaluation then covers more of its files), when the writer
    would otherwise wait for a parse, and as soon as the queue is drained. Claims start small after
    a quiet spell (the first part's parse overlaps nothing) and double while the queue stays full.
    One heartbeat thread beats for every job the pipeline holds. Not thread-safe: one per runner
    thread."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parser")
        self._ahead: deque[_Parsing] = deque()
        self._beat = Heartbeat(ctx.sessions, worker_name())
        self._size = FIRST_CLAIM
        self._evaluated = time.monotonic()
        self._evaluations = True  # evaluations may be queued (by this writer's stores, or before)
        # A claim took as many files as it asked for, and the queue has not been drained since
        # with every file stored: a back-load goes on.
        self._stretch = False
        self._claims: deque[Claim] = deque()  # handed by the watcher, to register
        self._claims_lock = threading.Lock()
        self._open = True
        with _writers_lock:
            _writers.setdefault(id(ctx), self)

    @property
    def busy(self) -> bool:
        """Batches are being parsed (or wait to be stored), or claims to be registered: call
        `step` again without waiting."""
        return bool(self._ahead or self._claims)

    @property
    def handed(self) -> int:
        """Claims handed by the watcher and not registered yet (the watcher claims no more beyond a
        bound: `dxa.embedded.HANDED_AHEAD`)."""
        return len(self._claims)

    def hand(self, claims: Sequence[Claim]) -> bool:
        """The watcher's claims (files renamed into work/), for this writer to register in its
        next step; False once it has stopped (the watcher then registers them itself). Until they
        are registered a crash leaves them in work/, where recovery finds them."""
        with self._claims_lock:
            if not self._open:
                return False
            self._claims.extend(claims)
            return True

    def _register_handed(self, limit: int | None) -> None:
        with self._claims_lock:
            count = len(self._claims) if limit is None else min(limit, len(self._claims))
            claims = [self._claims.popleft() for _ in range(count)]
        if not claims:
            return
        for result in register_claims(self.ctx, claims, copy=False):
            if isinstance(result, Exception) and not isinstance(result, UnreadableClaim):  # undone: back in the inbox
                log.warning("could not register a file from the inbox (%s); it is tried again", describe(result))

    def step(self) -> list[JobResult]:
        ctx = self.ctx
        results: list[JobResult] = []
        drained = False  # the queue held fewer files than this step asked for
        if sum(len(part.job_ids) for part in self._ahead) < AHEAD_FILES:
            self._register_handed(2 * MAX_CLAIM)
            wanted = self._size
            with ctx.sessions.begin() as session:
                jobs = claim_next_jobs(session, limit=wanted, kind="ingest_file", worker=worker_name())
                started = _start_all(ctx, session, [ClaimedJob.of(job) for job in jobs])
            drained = len(jobs) < wanted
            self._stretch = self._stretch or not drained or bool(self._claims)
            self._size = FIRST_CLAIM if not jobs else min(MAX_CLAIM, wanted if drained else 2 * wanted)
            results += [one for one in started if isinstance(one, JobResult)]
            files = [one for one in started if isinstance(one, ClaimedFile)]
            fresh = [one for one in files if one.job.attempts <= 1]
            part = LAST_PART if drained else PART
            for start in range(0, len(fresh), part):
                self._hand_over(fresh[start : start + part])
            for one in files:  # tried before: alone (its own parse child), so it takes no other file with it
                if one.job.attempts > 1:
                    results += run_or_release(ctx, [one.job.id], partial(ingest_batch, ctx, [one]))
                    self._evaluations = True
        oldest = self._ahead[0] if self._ahead else None
        full = sum(len(part.job_ids) for part in self._ahead) >= AHEAD_FILES
        if oldest is not None and (drained or full or oldest.parsed.done()):
            if not oldest.parsed.done() and time.monotonic() - self._evaluated >= EVALUATE_WAITING_S:
                results += self._evaluate(if_stored=True)  # while the part is parsed, rather than wait
            results += self._store_oldest()
        if drained and not self._ahead:
            self._stretch = False  # every file of the stretch stored: its evaluations all run now
        if (drained and not self._ahead) or time.monotonic() - self._evaluated >= EVALUATE_EVERY_S:
            results += self._evaluate()
        return results

    def _evaluate(self, *, if_stored: bool = False) -> list[JobResult]:
        """A batch of the queued evaluations; `if_stored`: only when this writer's stores may have
        queued some since the last batch left none (others' jobs, a page's, wait for the next look).
        During a stretch only those queued `SETTLE_S` ago, batch after batch (one a step) while
        they fill one."""
        self._evaluated = time.monotonic()
        if if_stored and not self._evaluations:
            return []
        settled = datetime.now(UTC) - timedelta(seconds=SETTLE_S) if self._stretch else None
        results = run_batch(self.ctx, limit=EVALUATION_BATCH, kind="evaluate_patient", queued_before=settled)
        self._evaluations = len(results) == EVALUATION_BATCH
        if settled is not None and self._evaluations:
            self._evaluated -= EVALUATE_EVERY_S  # more have settled: the next step runs the next batch
        return results

    def close(self) -> None:
        """Store what is being parsed (a batch that cannot be is put back in the queue), and stop
        the parser and heartbeat threads."""
        with _writers_lock:
            if _writers.get(id(self.ctx)) is self:
                del _writers[id(self.ctx)]
        with self._claims_lock:
            self._open = False
        try:
            try:
                self._register_handed(None)
            except Exception as exc:  # left in work/: recovery registers them at the next start
                log.warning("claimed files could not be registered at stop (%s)", describe(exc))
            while self._ahead:
                try:
                    self._store_oldest()
                except Exception as exc:
                    log.warning("a batch could not be stored at stop (%s); it is queued again", describe(exc))
        finally:
            self._parser.shutdown(wait=True)
            self._beat.close()

    def _hand_over(self, files: list[ClaimedFile]) -> None:
        ids = [one.job.id for one in files]
        self._beat.hold(ids)
        self._ahead.append(_Parsing(ids, self._parser.submit(parse_batch_ahead, self.ctx, files)))

    def _store_oldest(self) -> list[JobResult]:
        """Store the oldest batch once parsed. A fault (of its parse or of the database) puts its
        jobs back in the queue at once, and raises."""
        batch = self._ahead.popleft()
        try:
            results = store_batch(self.ctx, batch.parsed.result())
            self._evaluations = True  # its patients' evaluations queued (a quarantine queues none: rare)
            return results
        except Exception as exc:
            log.warning(
                "a batch of %d jobs failed by a fault (%s); put back in the queue", len(batch.job_ids), describe(exc)
            )
            release_all(self.ctx, batch.job_ids)
            raise
        finally:
            self._beat.drop(batch.job_ids)


_writers: dict[int, Pipeline] = {}  # the running writer of each context (by id), for its watcher
_writers_lock = threading.Lock()


def writer_for(ctx: Context) -> Pipeline | None:
    """The embedded writer of `ctx` running in this process, if any (`Pipeline.hand`)."""
    with _writers_lock:
        return _writers.get(id(ctx))


class Heartbeat:
    """One heartbeat thread for a changing set of jobs (`services.liveness.heartbeat` beats for a
    fixed set, with a thread each time): the pipeline holds batches from their claim until they are
    stored, several at a time. Started with the first job held."""

    def __init__(self, sessions: sessionmaker[Session], worker: str, every_s: float = HEARTBEAT_S) -> None:
        self._sessions = sessions
        self._worker = worker
        self._every_s = every_s
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, job_ids: Sequence[int]) -> None:
        with self._lock:
            self._held.update(job_ids)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeat-pipeline", daemon=True)
                self._thread.start()

    def drop(self, job_ids: Sequence[int]) -> None:
        with self._lock:
            self._held.difference_update(job_ids)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            with self._lock:
                ids = sorted(self._held)
            if not ids:
                continue
            try:
                with self._sessions.begin() as session:
                    touch_running(session, ids, self._worker)
            except Exception as exc:  # the database restarting: try again next beat
                log.warning("heartbeat of %d jobs not recorded: %s", len(ids), type(exc).__name__)


def _execute_or_release(ctx: Context, started: ClaimedJob | ClaimedFile | JobResult) -> JobResult:
    """A job that fails by a fault (the database went away, the disk filled) goes back to `queued`
    at once, its file to `pending`, so neither stays `running`/`processing` until the sweeper's
    age rule (the Celery retry of the same message then claims it again). If even that cannot be
    written, the sweeper's rule remains."""
    try:
        return _execute(ctx, started)
    except Exception as exc:
        job = started.job if isinstance(started, ClaimedFile) else started
        if isinstance(job, ClaimedJob):
            log.warning("job %s failed by a fault (%s); put back in the queue", job.id, type(exc).__name__)
            try:
                release(ctx, job.id)
            except Exception as again:
                log.warning("job %s could not be put back (%s); the sweeper will", job.id, type(again).__name__)
        raise


def _start(ctx: Context, session: Session, job: ClaimedJob) -> ClaimedJob | ClaimedFile | JobResult:
    """In the claim's transaction: an ingest job's file is marked `processing` at once."""
    return start_ingest(ctx, session, job) if job.kind == "ingest_file" else job


def _execute(ctx: Context, started: ClaimedJob | ClaimedFile | JobResult) -> JobResult:
    if isinstance(started, JobResult):
        return started
    job_id = started.job.id if isinstance(started, ClaimedFile) else started.id
    with heartbeat(ctx.sessions, job_id, worker_name()):  # a silent job is taken over (services.recovery)
        if isinstance(started, ClaimedFile):
            return ingest_claimed(ctx, started)
        return evaluate_job(ctx, started)
