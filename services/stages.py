"""A chunk of claimed files ingested in parts, the parse of the next part overlapping the store of
the one before (issue 13): a Celery worker process otherwise waits for its parse child while it
parses, and the child idles while the worker stores. The parse runs in a thread of this process
that drives a parse child of its own (`services.parsing`: one child per thread), so the per-file
limits and a dying child's isolation of its file are `parse_batch`'s, as in `ingest_batch`; each
part is stored in a transaction of its own (`store_batch`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from services.context import Context
from services.ingestion import ClaimedFile, ParsedFile, ingest_batch, parse_batch, store_batch
from services.outcomes import JobResult

PART = 8  # files parsed (and stored) together: small enough to overlap, large enough to batch

_lock = threading.Lock()
_parsers: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked process makes its own


def _parser() -> ThreadPoolExecutor:
    with _lock:
        pool = _parsers.get(os.getpid())
        if pool is None:
            _parsers.clear()  # a parent's pool, copied by a fork, has no thread here
            pool = _parsers[os.getpid()] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parser")
        return pool


def ingest_overlapped(ctx: Context, files: Sequence[ClaimedFile], part: int = PART) -> list[JobResult]:
    """`ingest_batch` for a chunk, in parts of `part` files: part k+1 is parsed while part k is
    stored. A fault raises once the parse under way has ended (its child is never left mid-file);
    the parts stored before it stay stored."""
    parts = [list(files[i : i + part]) for i in range(0, len(files), part)]
    if len(parts) < 2:
        return ingest_batch(ctx, files)
    pool = _parser()
    results: list[JobResult] = []
    ahead: Future[list[ParsedFile]] | None = pool.submit(parse_batch, ctx, parts[0])
    for k in range(len(parts)):
        assert ahead is not None
        parsed = ahead.result()
        ahead = pool.submit(parse_batch, ctx, parts[k + 1]) if k + 1 < len(parts) else None
        try:
            results += store_batch(ctx, parsed)
        except BaseException:
            if ahead is not None:
                ahead.cancel() or ahead.exception()  # wait for the parse under way to end
            raise
    return results
