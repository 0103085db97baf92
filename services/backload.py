"""Back-loading (`dxa ingest PATH…`): a hospital's archive copied in and ingested synchronously by
this process, whatever the deployment, in chunks: each chunk's files are copied into work/ and
registered in one commit (`services.intake.intake_many`), then parsed and stored as one batch
(`services.runner.run_jobs`); the patients' evaluations run at the end, each patient once.

Nothing of a chunk is kept in memory beyond it, so a run of 100 000 files stays flat.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from services.context import Context
from services.intake import intake_many
from services.runner import BATCH, run_batch, run_jobs

FINAL = ("ingested", "duplicate", "quarantined", "held")  # held: a scan waiting for a person (issue 14)


@dataclass(frozen=True)
class Loaded:
    path: Path
    outcome: str  # ingested | duplicate | quarantined | unfinished
    detail: str


def ingest_paths(ctx: Context, paths: Iterable[Path], chunk: int = BATCH) -> Iterator[Loaded]:
    """Each path's outcome, chunk by chunk. A file whose parse child died is tried again at once
    (a back-load has nobody waiting for the backoff) until its attempts are used up."""
    it = iter(paths)
    while batch := list(islice(it, chunk)):
        yield from _load_chunk(ctx, batch)


def _load_chunk(ctx: Context, paths: list[Path]) -> Iterator[Loaded]:
    received = intake_many(ctx, paths, copy=True)
    pending: dict[int, Path] = {}
    for path, intake in zip(paths, received, strict=True):
        if isinstance(intake, Exception):
            raise intake
        if intake.outcome == "duplicate":
            yield Loaded(path, "duplicate", f"same bytes as a file already received, now {intake.prior_status}")
        else:
            assert intake.job_id is not None
            pending[intake.job_id] = path
    for _ in range(ctx.settings.max_attempts + 1):
        if not pending:
            return
        done = run_jobs(ctx, list(pending))
        for result in done:
            if result.outcome in FINAL and result.job_id in pending:
                yield Loaded(pending.pop(result.job_id), result.outcome, result.detail)
        claimed = {result.job_id for result in done}
        for job_id in [j for j in pending if j not in claimed]:
            yield Loaded(pending.pop(job_id), "unfinished", "job is held by another process")
    for path in pending.values():
        yield Loaded(path, "unfinished", "parsing kept failing")


def run_queued_evaluations(ctx: Context) -> int:
    """Run the queued evaluations here, in batches; how many ran."""
    count = 0
    while results := run_batch(ctx, kind="evaluate_patient"):
        count += len(results)
    return count
