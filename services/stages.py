"""Parse and store overlapped (issue 13): while a batch of claimed files is stored, the next one
is parsed in a parser thread. The store holds this process's interpreter most of the time and the
parse runs in a child process (`services.parsing`, one child per thread), so the two proceed side
by side on two cores; one after the other, the worker waits for its child while it parses and the
child idles while the worker stores.

`Overlap` is the one mechanism, used by both runners: the embedded SQLite writer
(`services.runner.Pipeline`) feeds it each batch it claims, a Celery task (`ingest_overlapped`)
the parts of its chunk. Each batch is stored in a transaction of its own (`store_batch`); the
per-file limits and a dying child's isolation of its file are `parse_batch`'s, as in
`ingest_batch`; a batch's jobs have a heartbeat while they are parsed and stored, and go back to
the queue when their parse or store fails by a fault (`run_or_release`).

A Celery pool process parses only in its one parser thread (`_parser`), a chunk of a single part
too (then nothing overlaps it): a second thread's child doubled the memory of a pool process (a
hundred-odd megabytes each, bench/pipeline.py) for no parse running beside it.

A Celery task does not stop at the end of its chunk while files wait (`taking_more`): it claims
the oldest queued files from the job table, a part at a time, and goes on parsing the next part
while it stores the one before, for up to `TAKE_MORE_S`. Stopping at each chunk's end left the
parse child idle during the chunk's last store, its evaluations and the next task's claim, and
the next chunk's first part then parsed with nothing beside it (a pool process waited ~11 % of a
burst for those first parts, bench/pipeline.py --profile); with two pool processes, ten chunks of
a 300-file burst also split unevenly between them, while taking parts as they go they end
together. The messages of the files taken this way find their jobs claimed and do nothing (the
job table is the truth, `db.jobs.claim_jobs`); should the process die, its jobs are taken over
as any dead worker's are (`services.recovery`, or the next delivery of a message of theirs). Only
first tries are taken (a file tried before runs alone: `services.runner`), and only files.

New machines, and software versions new to a machine, are committed in a short transaction of
their own before a part is stored (`_commit_new_machines`): inside the part's transaction a new
machine's unique key was held until its commit, so a second worker storing a file of the same
machine waited for the whole store (`INSERT devices` lock waits in bench/pipeline.py's two-worker
bursts), and a new version locked the machine's row to the end of the part.

While a task takes more files from a backlog, its evaluations run every `EVALUATE_EVERY_S` rather
than after each chunk: a patient whose files come throughout a burst is evaluated a few times, not
once per chunk (bench/pipeline.py, 300 files, one worker: ~100 evaluations instead of ~145), and no
queued evaluation waits longer than that while files keep coming. Once the task has caught up with
the queue (a steady stream), they run after each part, as they did after each chunk.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy.orm import Session

from db.converters import device_values
from db.devices import ensure_devices, find_or_create_device, record_software_version
from db.jobs import ClaimedFileRow, claim_next_files, claim_next_jobs, finish_job_id
from db.models import Job
from ingest.report import DeviceIdentity
from services.context import Context
from services.ingestion import ClaimedFile, ParsedFile, parse_batch, start_ingests, store_batch
from services.liveness import heartbeat
from services.outcomes import PARSER_VERSION, ClaimedJob, JobResult, worker_name

log = logging.getLogger(__name__)

PART = 8  # the first part of a Celery chunk: its parse is the one nothing overlaps
LATER_PART = 24  # the parts after it: parsed while the part before is stored (a store takes ~3x a parse)
SWITCH_S = 0.0005  # the interpreter's thread switch interval in a process that overlaps parse and store
TAKE_MORE_S = 20.0  # a task claims more queued files while it has run less than this (far below its time limit)
TAKE_PART = 24  # files claimed from the queue at a time, parsed and stored as one part
EVALUATE_EVERY_S = 3.0  # while a task takes more files, the evaluations its stores queued run this often


def favour_parser_thread() -> None:
    """Let the parser thread have the interpreter lock back soon after each of its pipe calls.

    Each file costs that thread a few system calls (write the request, wait for the reply, read
    it), and after each one it queues for the lock behind the storing thread, which holds it for up
    to the switch interval (5 ms by default) while it runs Python: meanwhile the parse child idles.
    A shorter interval only costs a switch when another thread is waiting, which is rare here.
    Measured on the samples, the parser thread beside a thread busy in Python: about a quarter less
    wall time per file at loadavg 3, a tenth at loadavg 8 (noisy; 5 ms against 0.5 ms)."""
    sys.setswitchinterval(SWITCH_S)


@dataclass
class _Parsing:
    """A batch whose parse runs in the parser thread."""

    job_ids: list[int]
    parsed: Future[list[ParsedFile]]


class Overlap:
    """`feed(files)` starts the parse of a batch in the parser thread and, meanwhile, stores the
    batch fed before it; `drain()` stores the last one. A batch is therefore stored one `feed`
    later than it was given, by the calling thread (the one writer, on SQLite). A store's fault
    raises after the batch given with it was handed to the parser: that one stays pending (stored
    by the next `feed` or `drain`, or dropped by `abandon`). Not thread-safe: one per caller."""

    def __init__(self, ctx: Context, parser: ThreadPoolExecutor) -> None:
        self.ctx = ctx
        self._parser = parser
        self._pending: _Parsing | None = None

    @property
    def busy(self) -> bool:
        """A batch is being parsed (or waits to be stored)."""
        return self._pending is not None

    def feed(self, files: Sequence[ClaimedFile]) -> list[JobResult]:
        following = self._parse(list(files)) if files else None
        try:
            return self.drain()
        finally:
            self._pending = following

    def drain(self) -> list[JobResult]:
        pending, self._pending = self._pending, None
        if pending is None:
            return []
        # A parse that failed by a fault (not a file's verdict) puts the batch back, like a store's.
        return run_or_release(self.ctx, pending.job_ids, lambda: self._store(pending.parsed.result()))

    def _store(self, parsed: list[ParsedFile]) -> list[JobResult]:
        _commit_new_machines(self.ctx, [r.device for _, one in parsed if isinstance(one, tuple) for r in one])
        return store_batch(self.ctx, parsed)

    def abandon(self) -> None:
        """After a fault: wait for the parse under way to end (its child is never left mid-file) and
        put its batch back in the queue."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        pending.parsed.cancel() or pending.parsed.exception()
        release_all(self.ctx, pending.job_ids)

    def _parse(self, files: list[ClaimedFile]) -> _Parsing:
        ids = [one.job.id for one in files]

        def parse() -> list[ParsedFile]:
            with heartbeat(self.ctx.sessions, ids, worker_name()):
                return parse_batch(self.ctx, files)

        return _Parsing(ids, self._parser.submit(parse))


_lock = threading.Lock()
_parsers: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked process makes its own


def _parser() -> ThreadPoolExecutor:
    with _lock:
        pool = _parsers.get(os.getpid())
        if pool is None:
            _parsers.clear()  # a parent's pool, copied by a fork, has no thread here
            pool = _parsers[os.getpid()] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parser")
        return pool


def ingest_overlapped(
    ctx: Context, files: Sequence[ClaimedFile], part: int = PART, later: int = LATER_PART
) -> list[JobResult]:
    """`ingest_batch` for a chunk (a Celery task's), in parts: part k+1 is parsed while part k is
    stored. The first part (`part` files) is small, since the task waits for its parse; the
    others (up to `later` files) are larger, since each store is a transaction whose fixed cost
    (locks, flushes, commit, the moves' flush) is paid per part, and storing a file takes about
    three times its parse (bench/store.py, bench/pipeline.py's profile of a pool process: its
    task thread is the critical path, the parse child waits for it). A fault raises once the
    parse under way has ended; the parts stored before it stay stored, the others go back to
    the queue."""
    overlap = Overlap(ctx, _parser())
    results: list[JobResult] = []
    more = _more.get()
    if any(one.job.attempts > 1 for one in files):
        more = None  # a file tried before runs alone, with no other file beside it
    try:
        for start, end in _parts(len(files), part, later):
            results += overlap.feed(files[start:end])
        while more is not None and time.monotonic() < more.until:
            taken, skipped = _take_queued(ctx, TAKE_PART)
            results += skipped
            if not taken:
                break
            results += overlap.feed(taken)  # the part before is stored while this one is parsed
            more.evaluate_when_due(caught_up=len(taken) < TAKE_PART)
        return results + overlap.drain()
    except BaseException:
        overlap.abandon()
        raise


def take_queued_files(ctx: Context) -> list[JobResult]:
    """Within `taking_more`: the oldest queued files (first tries), parsed and stored part after
    part while any wait; nothing outside it."""
    return ingest_overlapped(ctx, []) if _more.get() is not None else []


@dataclass
class _More:
    """A task's leave to take more queued files (`taking_more`)."""

    until: float  # time.monotonic() after which no more is claimed
    evaluate: Callable[[], None] | None
    every_s: float
    evaluated: float  # time.monotonic() of the last evaluation

    def evaluate_when_due(self, *, caught_up: bool) -> None:
        """`caught_up`: the queue held fewer files than asked for (a steady stream, not a backlog),
        so the evaluations run now rather than keep its files waiting for `every_s`."""
        if self.evaluate is not None and (caught_up or time.monotonic() - self.evaluated >= self.every_s):
            self.evaluated = time.monotonic()
            self.evaluate()


_more: ContextVar[_More | None] = ContextVar("dxa_take_more", default=None)


@contextmanager
def taking_more(
    evaluate: Callable[[], None] | None = None, for_s: float = TAKE_MORE_S, every_s: float = EVALUATE_EVERY_S
) -> Iterator[None]:
    """Within the block, `ingest_overlapped` goes on with the oldest queued files once its chunk is
    parsed, part after part, while any wait and for up to `for_s` (a Celery task: see the module's
    docstring); `evaluate` (the evaluations its stores queued) is called between parts at most
    every `every_s`, while the next part is parsed, so a long run does not hold them back."""
    now = time.monotonic()
    token = _more.set(_More(now + for_s, evaluate, every_s, now))
    try:
        yield
    finally:
        _more.reset(token)


def _take_queued(ctx: Context, limit: int) -> tuple[list[ClaimedFile], list[JobResult]]:
    """Claim up to `limit` of the oldest queued first tries of files (their files marked
    `processing` in the same commit): (the files to parse, the jobs already settled)."""
    with ctx.sessions.begin() as session:
        rows = claim_next_files(session, limit=limit, worker=worker_name(), parser_version=PARSER_VERSION)
        if rows is None:  # not PostgreSQL
            jobs = claim_next_jobs(session, limit=limit, kind="ingest_file", worker=worker_name(), first_tries=True)
            started = start_ingests(ctx, session, [ClaimedJob.of(job) for job in jobs]) if jobs else []
        else:
            started = [_claimed_file(session, row) for row in rows]
    files = [one for one in started if isinstance(one, ClaimedFile)]
    return files, [one for one in started if isinstance(one, JobResult)]


def _claimed_file(session: Session, row: ClaimedFileRow) -> ClaimedFile | JobResult:
    if row.source_file_id is None:  # as `start_ingests` settles it
        finish_job_id(session, row.job_id)
        return JobResult(row.job_id, "ingest_file", "skipped", "source file row is gone")
    job = ClaimedJob(row.job_id, "ingest_file", row.attempts, row.source_file_id, None)
    return ClaimedFile(job, row.source_file_id, row.stored_path, row.original_name, row.sha256)


# database -> (identity key, software version) of the machines committed there (none is deleted)
_machines: dict[str, set[tuple[str, str]]] = {}


def _commit_new_machines(ctx: Context, devices: Sequence[DeviceIdentity]) -> None:
    """Create the machines of a part that this process has not seen yet, and record their
    software versions new to it, in a short transaction of their own before the part's (see the
    module's docstring). Recorded there, a version is already on the machine's row when the part's
    transaction reads it, so that transaction takes no lock on the row (`db.devices
    .record_software_version`): between two workers' parts that lock waited for the other part's
    commit. A machine or a version stays when the part is not stored after all: the machine did
    send it."""
    wanted = {(device_values(d)["identity_key"], (d.software_version or "").strip()): d for d in devices}
    if not wanted:
        return
    known = _machines.setdefault(str(ctx.engine.url), set())
    new = [(key, device) for key, device in sorted(wanted.items(), key=lambda kv: kv[0]) if key not in known]
    if not new:
        return
    with ctx.sessions.begin() as session:
        ensure_devices(session, [device for _, device in new])  # new machines in identity key order
        rows = [(find_or_create_device(session, d, record_version=False), d.software_version) for _, d in new]
        for row, version in sorted(rows, key=lambda one: one[0].id):  # locked in machine order (write_shared's)
            record_software_version(session, row, version)
    known.update(key for key, _ in new)


def _parts(count: int, first: int, later: int) -> list[tuple[int, int]]:
    """(start, end) of the parts of a chunk of `count` files: `first` files, then the rest in
    parts of at most `later`, as even as can be (no small part left at the end)."""
    bounds = [(0, min(first, count))] if count else []
    rest = count - bounds[0][1] if bounds else 0
    pieces = -(-rest // later) if rest else 0
    start = bounds[0][1] if bounds else 0
    for k in range(pieces):
        size = rest // pieces + (1 if k < rest % pieces else 0)
        bounds.append((start, start + size))
        start += size
    return bounds


def run_or_release(ctx: Context, job_ids: list[int], run: Callable[[], list[JobResult]]) -> list[JobResult]:
    """Run a batch with a heartbeat; on a fault every job of it still `running` under this worker
    goes back to `queued` at once (its file to `pending`), instead of waiting for the sweeper's
    age rule, and the fault is raised."""
    try:
        with heartbeat(ctx.sessions, job_ids, worker_name()):  # a silent batch is taken over (services.recovery)
            return run()
    except Exception as exc:
        fault = type(exc).__name__
        log.warning("a batch of %d jobs failed by a fault (%s); put back in the queue", len(job_ids), fault)
        release_all(ctx, job_ids)
        raise


def release_all(ctx: Context, job_ids: Sequence[int]) -> None:
    for job_id in job_ids:
        try:
            release(ctx, job_id)
        except Exception as again:
            log.warning("job %s could not be put back (%s); the sweeper will", job_id, type(again).__name__)


def release(ctx: Context, job_id: int) -> None:
    """Put a job this worker holds back in the queue (its file back to `pending`)."""
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id)
        if job is None or job.state != "running" or job.worker != worker_name():
            return
        job.state = "queued"
        job.worker = None
        if job.source_file is not None and job.source_file.status == "processing":
            job.source_file.status = "pending"
