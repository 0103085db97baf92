"""Back-loading (`dxa ingest PATH…`): a hospital's archive copied in and ingested synchronously by
this process, whatever the deployment, in chunks of `CHUNK` files, as a pipeline over the
machine's cores: each chunk's files are copied into work/ and registered in one commit
(`services.intake.intake_many`, new bytes in two statements), claimed in one more, then parsed by
`PARSERS` threads, each driving a parse child of its own, while this thread stores the chunk
parsed before in one transaction (`services.ingestion.store_batch`). The patients' evaluations
run at the end, each patient once (`run_queued_evaluations`).

Nothing of a chunk is kept in memory beyond the next one, so a run of 100 000 files stays flat.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

from db.jobs import claim_jobs
from services.context import Context
from services.ingestion import ClaimedFile, ParsedFile, parse_batch, start_ingests, store_batch
from services.intake import intake_many
from services.outcomes import ClaimedJob, JobResult, worker_name
from services.parsing import warm_parsers
from services.runner import run_batch, run_jobs
from services.stages import release, run_or_release

FINAL = ("ingested", "duplicate", "quarantined", "held")  # held: a scan waiting for a person (issue 14)
CHUNK = 64  # files registered, claimed and stored together
PARSERS = max(1, min(2, os.cpu_count() or 1))  # parse children at once (a store runs beside them)
EVALUATIONS = 64  # evaluations run together at the end


@dataclass(frozen=True)
class Loaded:
    path: Path
    outcome: str  # ingested | duplicate | quarantined | held | unfinished
    detail: str


@dataclass
class _Chunk:
    """A registered and claimed chunk whose files are being parsed."""

    paths: dict[int, Path]  # job id -> the file it came from
    files: list[ClaimedFile] = field(default_factory=list)
    parsing: list[Future[list[ParsedFile]]] = field(default_factory=list)
    done: list[JobResult] = field(default_factory=list)  # settled when claimed (a file row gone)


def ingest_paths(ctx: Context, paths: Iterable[Path], chunk: int = CHUNK) -> Iterator[Loaded]:
    """Each path's outcome, chunk by chunk, while the next chunk is parsed. A file whose parse
    child died is tried again at once (a back-load has nobody waiting for the backoff) until its
    attempts are used up."""
    warm_parsers()  # before the parse children fork: they share the loaded parsers
    it = iter(paths)
    with ThreadPoolExecutor(max_workers=PARSERS, thread_name_prefix="backload-parser") as parsers:
        pending: _Chunk | None = None
        try:
            while batch := list(islice(it, chunk)):
                claimed, loaded = _claim_chunk(ctx, batch)
                yield from loaded
                _parse_chunk(ctx, parsers, claimed)
                if pending is not None:
                    yield from _store_chunk(ctx, pending)
                pending = claimed
            if pending is not None:
                yield from _store_chunk(ctx, pending)
            pending = None
        finally:
            if pending is not None:  # stopped early (an error, or the caller stopped reading)
                for future in pending.parsing:
                    future.cancel()
                _release(ctx, pending)


def _claim_chunk(ctx: Context, paths: list[Path]) -> tuple[_Chunk, list[Loaded]]:
    """Copy, register (one commit) and claim (one more) a chunk of files."""
    received = intake_many(ctx, paths, copy=True)
    loaded: list[Loaded] = []
    by_job: dict[int, Path] = {}
    for path, intake in zip(paths, received, strict=True):
        if isinstance(intake, Exception):
            raise intake
        if intake.outcome == "duplicate":
            loaded.append(
                Loaded(path, "duplicate", f"same bytes as a file already received, now {intake.prior_status}")
            )
        else:
            assert intake.job_id is not None
            by_job[intake.job_id] = path
    chunk = _Chunk(by_job)
    if by_job:
        with ctx.sessions.begin() as session:
            jobs = [ClaimedJob.of(job) for job in claim_jobs(session, list(by_job), worker=worker_name())]
            started = start_ingests(ctx, session, jobs)
        chunk.files = [one for one in started if isinstance(one, ClaimedFile)]
        chunk.done = [one for one in started if isinstance(one, JobResult)]
    return chunk, loaded


def _parse_chunk(ctx: Context, parsers: ThreadPoolExecutor, chunk: _Chunk) -> None:
    """The chunk's files shared out to the parser threads (fresh files only: one tried before is
    parsed alone by `_settle`, so a file that kills its child takes no other file with it)."""
    fresh = [one for one in chunk.files if one.job.attempts <= 1]
    parts = [fresh[i::PARSERS] for i in range(PARSERS)]
    chunk.parsing = [parsers.submit(parse_batch, ctx, part) for part in parts if part]


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
