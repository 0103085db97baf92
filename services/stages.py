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
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from db.models import Job
from services.context import Context
from services.ingestion import ClaimedFile, ParsedFile, parse_batch, store_batch
from services.liveness import heartbeat
from services.outcomes import JobResult, worker_name

log = logging.getLogger(__name__)

PART = 8  # the first part of a Celery chunk: its parse is the one nothing overlaps
LATER_PART = 24  # the parts after it: parsed while the part before is stored (a store takes ~3x a parse)
SWITCH_S = 0.0005  # the interpreter's thread switch interval in a process that overlaps parse and store


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
        return run_or_release(self.ctx, pending.job_ids, lambda: store_batch(self.ctx, pending.parsed.result()))

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
    try:
        for start, end in _parts(len(files), part, later):
            results += overlap.feed(files[start:end])
        return results + overlap.drain()
    except BaseException:
        overlap.abandon()
        raise


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
