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

Database work per dropped file: embedded counts every SQL statement and commit of the service's
engine (SQLAlchemy events, in-process); Celery counts committed transactions of the throwaway
database (`pg_stat_database.xact_commit`, read after the services stopped; statements cannot be
counted there without pg_stat_statements; the count also includes the pool's pre-ping, an
autocommit `SELECT 1` each time a session takes a connection, about one per transaction).

CPU per file (user + system seconds of the processes, children included) says where the time
goes and how far more worker processes could scale on a machine with more free cores: embedded
counts this whole process (watcher, runners, parse children); Celery counts the worker (main,
pool, parse children), the watcher, and the PostgreSQL backends of the bench database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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

from sqlalchemy import event, select  # noqa: E402

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
    statements: int | None = None
    commits: int | None = None
    cpu: dict[str, float] | None = None  # seconds by component
    evaluations: int = 0  # patient evaluations run

    def per_file(self, count: int | None) -> str:
        return f"{count / self.files:.1f}" if count is not None and self.files else "-"

    @property
    def rate(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        values = sorted(self.latencies)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their descendants (reaped ones included)."""
    import psutil

    procs: dict[int, Any] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            procs[pid] = root
            for child in root.children(recursive=True):
                procs[child.pid] = child
    total = 0.0
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _postgres_cpu(database: str) -> float:
    """CPU seconds of the live PostgreSQL backends connected to `database`."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(database in part for part in proc.info["cmdline"] or []):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


def _epoch(moment: datetime | None) -> float:
    if moment is None:
        return float("nan")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_only(batch: list[BatchFile]) -> Result:
    from ingest.errors import ParseError
    from ingest.parse import ParseLimits, parse_file
    from settings import Settings

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
    result = Result("", n, done_at - t0, latencies)
    result.evaluations = sum(len(v) for v in evaluations.values())
    return result


def embedded(batch: list[BatchFile], runners: int = 2) -> Result:
    from db.migrate import upgrade
    from dxa.embedded import run_jobs_forever, watch_forever
    from services.context import build_context
    from settings import Settings

    with tempfile.TemporaryDirectory(prefix="dxa-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data", inbox=Path(tmp) / "inbox", database_url=None, broker_url=None,
            min_file_age_s=0, scan_interval_s=0.2,
        )  # fmt: skip
        ctx = build_context(settings)
        upgrade(ctx.engine)
        counts = {"statements": 0, "commits": 0}

        def count(key: str) -> Any:
            def listener(*_: Any, **__: Any) -> None:
                counts[key] += 1

            return listener

        event.listen(ctx.engine, "before_cursor_execute", count("statements"))
        event.listen(ctx.engine, "commit", count("commits"))
        stop = threading.Event()
        threads = [threading.Thread(target=watch_forever, args=(ctx, stop), daemon=True)]
        threads += [threading.Thread(target=run_jobs_forever, args=(ctx, stop), daemon=True) for _ in range(runners)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # runners' start-up refresh of an empty database
        dropped: dict[str, float] = {}
        cpu0 = _tree_cpu([os.getpid()])
        t0 = time.time()
        drop(batch, settings.inbox_dir, dropped)
        wait_until(
            lambda: not files_below(settings.inbox_dir) and pipeline_idle(ctx.sessions, len(batch)), 3600, "batch"
        )
        cpu = _tree_cpu([os.getpid()]) - cpu0
        stop.set()
        for t in threads:
            t.join(timeout=30)
        result = _measure(ctx.sessions, dropped, t0, len(batch))
        result.statements, result.commits = counts["statements"], counts["commits"]
        result.cpu = {"process": cpu}
        ctx.engine.dispose()
    result.mode = f"embedded (SQLite, {runners} runner threads)"
    return result


def scaled(batch: list[BatchFile], processes: int) -> Result:
    from sqlalchemy.engine import make_url

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
                database = str(make_url(url).database)
                cpu0 = (_tree_cpu([worker.pid]), _tree_cpu([watch.pid]), _postgres_cpu(database))
                dropped: dict[str, float] = {}
                t0 = time.time()
                drop(batch, base / "inbox", dropped)
                wait_until(
                    lambda: not files_below(base / "inbox") and pipeline_idle(sessions, len(batch)), 3600, "batch"
                )
                result = _measure(sessions, dropped, t0, len(batch))
                cpu1 = (_tree_cpu([worker.pid]), _tree_cpu([watch.pid]), _postgres_cpu(database))
                result.cpu = {k: b - a for k, a, b in zip(("worker", "watcher", "postgres"), cpu0, cpu1, strict=True)}
            finally:
                watch.stop()
                worker.stop()
                engine.dispose()
            result.commits = _pg_commits(url)
        finally:
            drop_postgres_database(url)
            redis.stop()
    result.mode = f"celery, {processes} worker process{'es' if processes > 1 else ''} (PostgreSQL, Redis)"
    return result


def _pg_commits(url: str) -> int | None:
    """Transactions committed in the bench database so far (its services stopped: stats flushed)."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    time.sleep(1.5)  # backends report their statistics at most once a second
    conninfo = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (parsed.database,)).fetchone()
    return int(row[0]) if row else None


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
    head = f"{'mode':<50} {'files/s':>8} {'parse/e2e':>10} {'p50 s':>7} {'p95 s':>7}"
    print(f"{head} {'SQL/file':>9} {'commits/file':>13}")
    for r in results:
        ratio = f"{parse.rate / r.rate:.2f}x" if r is not parse and r.rate else "-"
        p50 = f"{r.pct(0.5):.2f}" if r.latencies else "-"
        p95 = f"{r.pct(0.95):.2f}" if r.latencies else "-"
        sql, commits = r.per_file(r.statements), r.per_file(r.commits)
        print(f"{r.mode:<50} {r.rate:>8.1f} {ratio:>10} {p50:>7} {p95:>7} {sql:>9} {commits:>13}")
    print()
    for r in results:
        if r.cpu:
            parts = ", ".join(f"{k} {v / r.files * 1000:.1f}" for k, v in r.cpu.items())
            print(f"{r.mode}: CPU ms/file {parts}; {r.evaluations} patient evaluations")
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
