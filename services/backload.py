"""Back-loading (`dxa ingest PATH…`): a hospital's archive copied in and ingested synchronously by
this process, whatever the deployment, in chunks of `CHUNK` files, as a pipeline over the
machine's cores. Each chunk's files are copied into work/ by `COPIERS` threads a chunk ahead (each
copy is flushed to disk, a wait rather than work, which several copies share, and which kept this
thread idle for ~4 ms a file when it copied them itself), registered in one commit
(`services.intake.register_claims`, new bytes in two statements), claimed in one more, then parsed
by `PARSERS` threads, each driving a parse child of its own, while this thread, the one writer,
stores the chunk parsed before in one transaction (`services.ingestion.store_batch`). The
patients' evaluations run while this thread would wait for a parse, those queued a while ago
(`_evaluate_while_parsing`), and the rest at the end (`run_queued_evaluations`).

A run killed half-way loses nothing (the user's archive is only read), and running it again
finishes the job: the jobs the killed run held are taken over (by the same bytes, `_claim_chunk`)
rather than their files counted as duplicates, the moves after its commits are finished, the
copies it was writing removed (`_clear_after_kill`), and the evaluations it queued run. Complete
copies it had not registered yet are known bytes once the second run registered them: recovery
drops them (at a service's start, or the next back-load's once settled).

Nothing of a chunk is kept in memory beyond the next one, so a run of 100 000 files stays flat.
(The RSS of the process tree counts each parse child's pages shared with this process again: two
children forked from a ~130 MB process show ~390 MB of RSS for ~210 MB of PSS.)
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.jobs import claim_jobs, worker_gone
from db.models import Job
from ingest.watcher import is_ignored
from services.context import Context
from services.files import UnreadableSource, claim_by_copy, cut_copies, flush_folder, read_error_words
from services.ingestion import ClaimedFile, ParsedFile, parse_batch, start_ingests, store_batch
from services.intake import IntakeResult, UnreadableClaim, register_claims
from services.logsafe import describe
from services.outcomes import ClaimedJob, JobResult, worker_name
from services.parsing import warm_parsers
from services.recovery import recover_files
from services.runner import SETTLE_S, run_batch, run_jobs
from services.stages import release, run_or_release

log = logging.getLogger(__name__)

FINAL = ("ingested", "duplicate", "quarantined", "held")  # held: a scan waiting for a person (issue 14)
CHUNK = 64  # files registered, claimed and stored together
PARSERS = max(1, min(2, os.cpu_count() or 1))  # parse children at once (a store runs beside them)
EVALUATIONS = 64  # evaluations run together at the end
COPIERS = 2  # files copied into work/ at once: their flushes to disk overlap (and share journal commits)
SETTLED = timedelta(seconds=30)  # a move left undone this long ago is a killed run's, not a live job's


@dataclass(frozen=True)
class Loaded:
    path: Path
    outcome: str  # ingested | duplicate | quarantined | held | unfinished | unreadable
    detail: str


@dataclass
class _Chunk:
    """A registered and claimed chunk whose files are being parsed."""

    paths: dict[int, Path]  # job id -> the file it came from
    files: list[ClaimedFile] = field(default_factory=list)
    parsing: list[Future[list[ParsedFile]]] = field(default_factory=list)
    done: list[JobResult] = field(default_factory=list)  # settled when claimed (a file row gone)


class _Copies:
    """A chunk's files being copied into work/ by the copier threads, while this thread registers,
    stores and settles the chunks before it."""

    def __init__(self, ctx: Context, copiers: ThreadPoolExecutor, paths: list[Path]) -> None:
        self.paths = paths
        work_dir, owner = ctx.settings.work_dir, worker_name()
        self.copying = [copiers.submit(claim_by_copy, path, work_dir, owner) for path in paths]

    def result(self) -> list[Path | OSError]:
        """Each file's copy in work/ (flushed), or why it could not be read (permission, gone since
        it was listed, an input/output error, not a regular file): that file is reported, the
        others go on. Any other fault (work/ refusing the copy: a full disk) stops the run, the
        chunk's other copies removed."""
        wait(self.copying)
        out: list[Path | OSError] = []
        for future in self.copying:
            exc = future.exception()
            if exc is None:
                out.append(future.result())
            elif isinstance(exc, UnreadableSource):
                out.append(exc)
            else:
                self.abandon()
                raise exc
        return out

    def abandon(self) -> None:
        """The run stopped before these copies were registered: none is left in work/ (where the next
        service start-up would register it, a copy nobody asked for any more)."""
        for future in self.copying:
            future.cancel()
        wait(self.copying)
        for future in self.copying:
            if not future.cancelled() and future.exception() is None:
                future.result().unlink(missing_ok=True)


_ENTRY_KINDS = {
    stat.S_IFLNK: "a symbolic link inside a folder (not followed: name its target on the command line)",
    stat.S_IFIFO: "not a regular file: a named pipe",
    stat.S_IFSOCK: "not a regular file: a socket",
    stat.S_IFCHR: "not a regular file: a device",
    stat.S_IFBLK: "not a regular file: a device",
}


def list_sources(paths: Iterable[Path]) -> list[Path | Loaded]:
    """The files to back-load below `paths`, sorted, and in their place an `unreadable` outcome for
    each entry that will not be read, so that nothing is left out silently: a path given that does
    not exist (or a link given that points nowhere), a folder that cannot be listed, and inside
    folders the entries that are not regular files (symbolic links, which are not followed, as in
    the inbox; named pipes, sockets, devices). A path given on the command line is followed if it
    is a link. Hidden and temporary names (`ingest.watcher.is_ignored`) are left out, as the
    watcher leaves them."""
    found: list[Path | Loaded] = []
    for path in paths:
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            what = "no such file or folder" if isinstance(exc, FileNotFoundError) else read_error_words(exc)
            found.append(Loaded(path, "unreadable", what))
            continue
        if stat.S_ISDIR(mode):
            _walk(path, found)
        elif stat.S_ISREG(mode):
            found.append(path)
        else:
            found.append(Loaded(path, "unreadable", _ENTRY_KINDS.get(stat.S_IFMT(mode), "not a regular file")))
    return sorted(found, key=lambda one: one.path if isinstance(one, Loaded) else one)


def _walk(folder: Path, found: list[Path | Loaded]) -> None:
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError as exc:
        found.append(Loaded(folder, "unreadable", f"folder could not be listed: {read_error_words(exc)}"))
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError as exc:  # gone since the folder was listed
            found.append(Loaded(path, "unreadable", read_error_words(exc)))
            continue
        if stat.S_ISDIR(mode):
            if not entry.name.startswith("."):
                _walk(path, found)
        elif is_ignored(entry.name):
            continue
        elif stat.S_ISREG(mode):
            found.append(path)
        else:
            found.append(Loaded(path, "unreadable", _ENTRY_KINDS.get(stat.S_IFMT(mode), "not a regular file")))


def _clear_after_kill(ctx: Context) -> None:
    """What a back-load killed before left in work/, besides the files it registered (their jobs are
    taken over by `_claim_chunk`): the moves after its commits finished, the copies it was writing
    removed. What a live process is doing is left alone."""
    recover_files(ctx, settled_for=SETTLED)
    for path, owner in cut_copies(ctx.settings.work_dir):
        if worker_gone(owner):
            path.unlink(missing_ok=True)


def ingest_paths(ctx: Context, paths: Iterable[Path], chunk: int = CHUNK) -> Generator[Loaded, None, None]:
    """Each path's outcome, chunk by chunk, while the next chunk is parsed and the one after it
    copied. A file whose parse child died is tried again at once (a back-load has nobody waiting
    for the backoff) until its attempts are used up."""
    warm_parsers()  # before the parse children fork: they share the loaded parsers
    # The interpreter's switch interval is left at its default (`services.stages.favour_parser_thread`
    # is not for here): beside the copier threads, a 0.5 ms one cost more system time in switches
    # than the parse children gained (5 000 files alternated, loadavg 5-8: ~104-198 files/s
    # without it against 92-111 with it).
    _clear_after_kill(ctx)
    it = iter(paths)
    with (
        ThreadPoolExecutor(max_workers=PARSERS, thread_name_prefix="backload-parser") as parsers,
        ThreadPoolExecutor(max_workers=COPIERS, thread_name_prefix="backload-copier") as copiers,
    ):
        copying = _Copies(ctx, copiers, list(islice(it, chunk)))
        unstored: list[_Chunk] = []  # claimed, not stored yet: given back if the run stops
        try:
            while copying.paths:
                following = _Copies(ctx, copiers, list(islice(it, chunk)))
                copied, copying = copying, following
                claimed, loaded = _claim_chunk(ctx, copied)
                unstored.append(claimed)
                yield from loaded
                _parse_chunk(ctx, parsers, claimed)
                if len(unstored) > 1:
                    _evaluate_while_parsing(ctx, unstored[0])
                    yield from _store_chunk(ctx, unstored[0])
                    unstored.pop(0)
            while unstored:
                yield from _store_chunk(ctx, unstored[0])
                unstored.pop(0)
        finally:
            copying.abandon()
            for left in unstored:  # stopped early (an error, or the caller stopped reading)
                for future in left.parsing:
                    future.cancel()
                _release(ctx, left)  # a job stored already is not this worker's `running` one any more


def _claim_chunk(ctx: Context, copies: _Copies) -> tuple[_Chunk, list[Loaded]]:
    """Register (one commit) and claim (one more) a chunk of copied files. Bytes already received
    whose job is still to run, queued or held by a run that was killed, are claimed with the chunk
    and counted by their outcome, not as duplicates: running the back-load again finishes them."""
    copied = copies.result()
    flush_folder(ctx.settings.work_dir)  # the copies' names, before the rows that point at them
    claims = [(path, work) for path, work in zip(copies.paths, copied, strict=True) if isinstance(work, Path)]
    unread = [
        Loaded(path, "unreadable", read_error_words(exc))
        for path, exc in zip(copies.paths, copied, strict=True)
        if isinstance(exc, OSError)
    ]
    sources = [path for path, _ in claims]
    received = register_claims(ctx, claims, copy=True) if claims else []
    by_job: dict[int, Path] = {}
    again: dict[int, int] = {}  # source file id -> the first duplicate of it whose job may be taken over
    for k, (path, intake) in enumerate(zip(sources, received, strict=True)):
        if isinstance(intake, UnreadableClaim):  # its copy could not be read back: reported, removed
            unread.append(Loaded(path, "unreadable", intake.words))
            continue
        if isinstance(intake, Exception):  # the database refused to register it: not the file's fault
            raise intake
        if intake.outcome != "duplicate":
            assert intake.job_id is not None
            by_job[intake.job_id] = path
        elif intake.prior_status in ("pending", "processing"):
            again.setdefault(intake.source_file_id, k)
    chunk = _Chunk(by_job)
    taken: set[int] = set()  # the indexes of the duplicates whose job this chunk claimed
    with ctx.sessions.begin() as session:
        unfinished = _unfinished_jobs(session, list(again), set(by_job))
        jobs = [ClaimedJob.of(job) for job in claim_jobs(session, [*by_job, *unfinished], worker=worker_name())]
        for job in jobs:
            if job.id in unfinished:
                k = again[unfinished[job.id]]
                chunk.paths[job.id] = sources[k]
                taken.add(k)
        started = start_ingests(ctx, session, jobs) if jobs else []
    chunk.files = [one for one in started if isinstance(one, ClaimedFile)]
    chunk.done = [one for one in started if isinstance(one, JobResult)]
    loaded = unread + [
        Loaded(path, "duplicate", f"same bytes as a file already received, now {intake.prior_status}")
        for k, (path, intake) in enumerate(zip(sources, received, strict=True))
        if isinstance(intake, IntakeResult) and intake.outcome == "duplicate" and k not in taken
    ]
    return chunk, loaded


def _unfinished_jobs(session: Session, files: list[int], mine: set[int]) -> dict[int, int]:
    """job id -> source file id: the ingest jobs of `files` still to run (queued, or running; the
    claim takes over only those whose process is gone), other than the chunk's own."""
    if not files:
        return {}
    rows = session.execute(
        select(Job.id, Job.source_file_id).where(
            Job.source_file_id.in_(files), Job.kind == "ingest_file", Job.state.in_(("queued", "running"))
        )
    ).all()
    return {job_id: file_id for job_id, file_id in rows if job_id not in mine and file_id is not None}


def _parse_chunk(ctx: Context, parsers: ThreadPoolExecutor, chunk: _Chunk) -> None:
    """The chunk's files shared out to the parser threads (fresh files only: one tried before is
    parsed alone by `_settle`, so a file that kills its child takes no other file with it)."""
    fresh = [one for one in chunk.files if one.job.attempts <= 1]
    parts = [fresh[i::PARSERS] for i in range(PARSERS)]
    chunk.parsing = [parsers.submit(parse_batch, ctx, part) for part in parts if part]


def _evaluate_while_parsing(ctx: Context, chunk: _Chunk) -> None:
    """While the chunk to store next is still being parsed, a batch of the evaluations queued
    `services.runner.SETTLE_S` ago (patients whose files stopped coming a while ago): this thread
    would otherwise wait for the parse children (a quarter of its time, py-spy over 20 000 files),
    and every evaluation run at the end, with the parse children idle (a seventh of it). One that
    fails stays queued for the end."""
    if all(future.done() for future in chunk.parsing):
        return
    settled = datetime.now(UTC) - timedelta(seconds=SETTLE_S)
    try:
        run_batch(ctx, limit=EVALUATIONS, kind="evaluate_patient", queued_before=settled)
    except Exception as exc:
        log.warning("a batch of evaluations failed during the back-load (%s); run again at its end", describe(exc))


def _store_chunk(ctx: Context, chunk: _Chunk) -> Iterator[Loaded]:
    """Store the parsed chunk in one transaction (its jobs put back in the queue on a fault), then
    settle what is not final yet."""
    fresh = [one for one in chunk.files if one.job.attempts <= 1]
    ids = [one.job.id for one in fresh]

    def store() -> list[JobResult]:
        parsed = [item for future in chunk.parsing for item in future.result()]
        return store_batch(ctx, parsed)

    results = list(chunk.done)
    if fresh:
        results += run_or_release(ctx, ids, store)
    retried = [one for one in chunk.files if one.job.attempts > 1]
    for one in retried:
        results += run_or_release(ctx, [one.job.id], partial(_alone, ctx, one))
    yield from _settle(ctx, chunk.paths, results)


def _alone(ctx: Context, work: ClaimedFile) -> list[JobResult]:
    return store_batch(ctx, parse_batch(ctx, [work]))


def _settle(ctx: Context, paths: dict[int, Path], results: Sequence[JobResult]) -> Iterator[Loaded]:
    """Final outcomes yielded; jobs queued again (their child died) run again here, one by one,
    until their attempts are used up."""
    pending = dict(paths)
    done = list(results)
    for _ in range(ctx.settings.max_attempts + 1):
        for result in done:
            if result.outcome in FINAL and result.job_id in pending:
                yield Loaded(pending.pop(result.job_id), result.outcome, result.detail)
        claimed = {result.job_id for result in done}
        for job_id in [j for j in pending if j not in claimed]:
            yield Loaded(pending.pop(job_id), "unfinished", "job is held by another process")
        if not pending:
            return
        done = run_jobs(ctx, list(pending))
    for path in pending.values():
        yield Loaded(path, "unfinished", "parsing kept failing")


def _release(ctx: Context, chunk: _Chunk) -> None:
    """A chunk claimed but not stored (the run stopped): its jobs back in the queue, for the next
    run (or a worker) to take."""
    for one in chunk.files:
        try:
            release(ctx, one.job.id)
        except Exception:  # the sweeper's age rule remains
            continue


def run_queued_evaluations(ctx: Context) -> int:
    """Run the queued evaluations here, in batches; how many ran."""
    count = 0
    while results := run_batch(ctx, limit=EVALUATIONS, kind="evaluate_patient"):
        count += len(results)
    return count
