"""End-to-end pipeline throughput: files dropped into the inbox -> archived and the patient
re-evaluated, for N mixed sample files (issue 4's benchmark). Prints figures; not a test.

    .venv/bin/python bench/pipeline.py [--files 1000] [--modes parse,embedded,celery1,celery2]

- parse-only: `parse_file` on every file's bytes, in this process, one after the other;
- embedded: the `dxa serve` loops in-process (watcher + 2 runner threads, SQLite, no broker);
- celery1 / celery2: `dxa watch` + a real Celery worker with 1 or 2 prefork processes on a
  private redis-server and a throwaway PostgreSQL database.

The batch is the shared samples plus re-drops, UID conflicts and distinct variants
(tests/integration/pipeline/support.make_batch), all dropped at once. Latency is drop ->
evaluated for each ingested file (its patient's first evaluation that finished after the
file's rows were committed); with the whole batch dropped at once it is mostly queueing time.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from db.models import Job, SourceFile  # noqa: E402
from tests.integration.pipeline.support import (  # noqa: E402
    BatchFile,
    PrivateRedis,
    celery_worker,
    drop,
    dxa,
    files_below,
    load_samples,
    make_batch,
    pipeline_idle,
    service_env,
    wait_until,
)


@dataclass
class Result:
    mode: str
    files: int
    seconds: float
    latencies: list[float]
    note: str = ""

    @property
    def rate(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        values = sorted(self.latencies)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _epoch(moment: datetime | None) -> float:
    if moment is None:
        return float("nan")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_only(batch: list[BatchFile]) -> Result:
    from dxa.settings import Settings
    from ingest.errors import ParseError
    from ingest.parse import ParseLimits, parse_file

    s = Settings()
    limits = ParseLimits(max_bytes=s.max_file_bytes, max_pdf_pages=s.max_pdf_pages)
    start = time.perf_counter()
    for f in batch:
        with contextlib.suppress(ParseError):
            parse_file(f.data, Path(f.rel).name, limits)
    return Result("parse-only (1 process, in-process)", len(batch), time.perf_counter() - start, [])


def _measure(sessions: Any, dropped_at: dict[str, float], t0: float, n: int) -> Result:
    """Completion times from the database: files' own finish, their patients' evaluations."""
    with sessions() as session:
        files = session.execute(
            select(SourceFile.sha256, SourceFile.status, SourceFile.patient_id, SourceFile.finished_at)
        ).all()
        evaluations: dict[int, list[float]] = {}
        for patient_id, finished in session.execute(
            select(Job.patient_id, Job.finished_at).where(Job.kind == "evaluate_patient", Job.state == "done")
        ):
            evaluations.setdefault(int(patient_id), []).append(_epoch(finished))
    latencies: list[float] = []
    done_at = t0
    for sha, status, patient_id, finished in files:
        end = _epoch(finished)
        if status == "ingested" and patient_id is not None:
            later = [t for t in evaluations.get(int(patient_id), []) if t >= end - 1e-3]
            end = min(later) if later else end
            latencies.append(end - dropped_at[sha])
        done_at = max(done_at, end)
    return Result("", n, done_at - t0, latencies)


def embedded(batch: list[BatchFile], runners: int = 2) -> Result:
    from db.migrate import upgrade
    from dxa.embedded import run_jobs_forever, watch_forever
    from dxa.settings import Settings
    from workers.context import build_context

    with tempfile.TemporaryDirectory(prefix="dxa-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data", inbox=Path(tmp) / "inbox", database_url=None, broker_url=None,
            min_file_age_s=0, scan_interval_s=0.2,
        )  # fmt: skip
        ctx = build_context(settings)
        upgrade(ctx.engine)
        stop = threading.Event()
        threads = [threading.Thread(target=watch_forever, args=(ctx, stop), daemon=True)]
        threads += [threading.Thread(target=run_jobs_forever, args=(ctx, stop), daemon=True) for _ in range(runners)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # runners' start-up refresh of an empty database
        dropped: dict[str, float] = {}
        t0 = time.time()
        drop(batch, settings.inbox_dir, dropped)
        wait_until(
            lambda: not files_below(settings.inbox_dir) and pipeline_idle(ctx.sessions, len(batch)), 3600, "batch"
        )
        stop.set()
        for t in threads:
            t.join(timeout=30)
        result = _measure(ctx.sessions, dropped, t0, len(batch))
        ctx.engine.dispose()
    result.mode = f"embedded (SQLite, {runners} runner threads)"
    return result


def scaled(batch: list[BatchFile], processes: int) -> Result:
    from db.engine import make_engine, session_factory
    from db.migrate import upgrade
    from tests.conftest import create_postgres_database, drop_postgres_database

    with tempfile.TemporaryDirectory(prefix="dxa-bench-") as tmp:
        base = Path(tmp)
        redis = PrivateRedis(base / "redis.log")
        redis.start()
        url = create_postgres_database("dxa_bench")
        try:
            upgrade(url)
            env = service_env(
                DXA_BROKER_URL=redis.url, DXA_DATABASE_URL=url, DXA_DATA_DIR=str(base / "data"),
                DXA_INBOX=str(base / "inbox"), DXA_MIN_FILE_AGE_S="0", DXA_SCAN_INTERVAL_S="0.2",
            )  # fmt: skip
            worker = celery_worker(env, base / "worker.log", concurrency=processes).start()
            watch = dxa(["watch"], env, base / "watch.log").start()
            engine = make_engine(url)
            sessions = session_factory(engine)
            try:
                worker.wait_log("ready.", 60)
                watch.wait_log("watching the inbox", 60)
                dropped: dict[str, float] = {}
                t0 = time.time()
                drop(batch, base / "inbox", dropped)
                wait_until(
                    lambda: not files_below(base / "inbox") and pipeline_idle(sessions, len(batch)), 3600, "batch"
                )
                result = _measure(sessions, dropped, t0, len(batch))
            finally:
                watch.stop()
                worker.stop()
                engine.dispose()
        finally:
            drop_postgres_database(url)
            redis.stop()
    result.mode = f"celery, {processes} worker process{'es' if processes > 1 else ''} (PostgreSQL, Redis)"
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--modes", default="parse,embedded,celery1,celery2")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    batch = make_batch(load_samples(), args.files)
    distinct = len({f.sha256 for f in batch})
    print(f"{len(batch)} files ({distinct} distinct; re-drops, UID conflicts, variants; samples' rejects included)")
    parse = parse_only(batch)  # always: the other rates are compared with it
    results: list[Result] = [parse]
    for mode in modes:
        if mode == "embedded":
            results.append(embedded(batch))
        elif mode.startswith("celery"):
            results.append(scaled(batch, int(mode.removeprefix("celery") or 1)))
        else:
            continue
        print(f"  ... {results[-1].mode}: {results[-1].rate:.1f} files/s", flush=True)

    print()
    print(f"{'mode':<50} {'files/s':>8} {'parse/e2e':>10} {'p50 s':>7} {'p95 s':>7}")
    for r in results:
        ratio = f"{parse.rate / r.rate:.2f}x" if r is not parse and r.rate else "-"
        p50 = f"{r.pct(0.5):.2f}" if r.latencies else "-"
        p95 = f"{r.pct(0.95):.2f}" if r.latencies else "-"
        print(f"{r.mode:<50} {r.rate:>8.1f} {ratio:>10} {p50:>7} {p95:>7}")
    one = next((r for r in results if "1 worker process" in r.mode), None)
    two = next((r for r in results if "2 worker processes" in r.mode), None)
    print()
    if one is not None:
        verdict = "meets" if parse.rate / one.rate <= 1.5 else "misses"
        print(f"1 worker: parse-only is {parse.rate / one.rate:.2f}x end-to-end ({verdict} the 1.5x target)")
    if one is not None and two is not None:
        verdict = "meets" if two.rate / one.rate >= 1.7 else "misses"
        print(f"2 workers / 1 worker: {two.rate / one.rate:.2f}x ({verdict} the 1.7x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
