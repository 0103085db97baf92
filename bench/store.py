"""The store of parsed files (issue 13): CPU and SQL statements of `services.ingestion.store_batch`
alone, in batches of 64 as the runners store them, on SQLite and PostgreSQL. Prints figures; not
a test.

    .venv/bin/python bench/store.py                         # 400 files, both databases, 3 rounds
    .venv/bin/python bench/store.py --compare ../old-checkout --rounds 3
    .venv/bin/python bench/store.py --profile --databases postgresql
    DXA_BENCH_BATCH=8 .venv/bin/python bench/store.py       # batches of a Celery part (services.stages.PART)

The files are the shared samples plus re-drops, UID conflicts and distinct variants
(`tests.integration.pipeline.support.make_batch`), parsed once here (in this process, no child).
Each run is a subprocess on a fresh database (with `--compare`, the other checkout's code first
on its path, alternated with this one's in each round, so both meet the same load): it registers
and claims the files as the watcher and a runner do (`intake_many`, `claim_jobs` + `start_ingests`,
reported apart as "intake"), then stores them with `store_batch`, each batch given what the parse
gave. CPU: the run's own process time (the store is single-threaded here) plus, on PostgreSQL, the
CPU of its database's backends. Statements: SQLAlchemy `before_cursor_execute` events. With
`--profile`, cProfile's top functions of the store (this checkout's run only).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pickle
import pstats
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("DXA_BENCH_CODE", ROOT))  # the code a worker run imports (--compare)
sys.path.insert(0, str(CODE))

BATCH = int(os.environ.get("DXA_BENCH_BATCH", "64"))  # files stored together (a Celery part is 8)


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def postgres_cpu(database: str) -> float:
    """CPU seconds of the live PostgreSQL backends connected to `database` (bench/pipeline.py's
    too: it lives here because a `--compare` run of this file puts the other checkout first on the
    path, where a shared bench module may not exist)."""
    import psutil

    total: float = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(database in part for part in proc.info["cmdline"] or []):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


# --------------------------------------------------------------------------- parent


def prepare(files: int, folder: Path) -> Path:
    """The batch's files and what parsing each gave, pickled for the worker runs."""
    from ingest.errors import ParseError
    from ingest.parse import parse_file_or_scan
    from services.parsing import parse_limits
    from settings import Settings
    from tests.integration.pipeline.support import load_samples, make_batch

    batch = make_batch(load_samples(), files)
    settings = Settings(data_dir=folder / "parse", inbox=folder / "inbox0", database_url=None, broker_url=None)
    limits, _ = parse_limits(settings, date.today())
    parsed: dict[str, Any] = {}
    t0 = time.process_time()
    for f in batch:
        if f.sha256 in parsed:
            continue
        try:
            parsed[f.sha256] = parse_file_or_scan(f.data, Path(f.rel).name, limits)
        except ParseError as exc:
            parsed[f.sha256] = exc
    print(
        f"{len(batch)} files ({len(parsed)} distinct) parsed once in {time.process_time() - t0:.1f} CPU s",
        flush=True,
    )
    out = folder / "batch.pickle"
    out.write_bytes(pickle.dumps(([(f.rel, f.data) for f in batch], parsed)))
    return out


def run(code: Path, database: str, batch: Path, profile: bool) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", str(batch), "--databases", database]
    if profile:
        argv.append("--profile")
    env = {**os.environ, "PYTHONPATH": str(code), "DXA_BENCH_CODE": str(code)}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker run failed ({code}, {database}):\n{proc.stderr[-4000:]}")
    lines = proc.stdout.splitlines()
    figures: dict[str, Any] = json.loads(lines[-1])
    figures["profile"] = "\n".join(lines[:-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=400, help="files of the batch (make_batch)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--databases", default="sqlite,postgresql")
    ap.add_argument("--compare", type=Path, help="another checkout, run alternated with this one")
    ap.add_argument("--profile", action="store_true", help="cProfile's top functions of the store")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.databases, args.profile)
    print(f"loadavg before: {loadavg()}", flush=True)
    codes = [ROOT] + ([args.compare.resolve()] if args.compare else [])
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="dxa-bench-store-") as tmp:
        batch = prepare(args.files, Path(tmp))
        for round_ in range(1, args.rounds + 1):
            for database in databases:
                for code in codes if round_ % 2 else codes[::-1]:
                    r = run(code, database, batch, args.profile and code == ROOT and round_ == 1)
                    results.setdefault((code.name, database), []).append(r)
                    print(
                        f"  round {round_} {database:<10} code of {code.name:<12} store {r['cpu_ms_f']:6.2f} CPU ms/f"
                        f" (postgres {r['pg_ms_f']:5.2f}), {r['sql_f']:5.2f} SQL/f; intake {r['intake_cpu_ms_f']:5.2f}"
                        f" CPU ms/f, {r['intake_sql_f']:5.2f} SQL/f  (loadavg {loadavg()})",
                        flush=True,
                    )
                    print(f"    outcomes {r['outcomes']}, rows {r['digest']} (code of {r['code']})", flush=True)
                    if r["profile"]:
                        print(r["profile"], flush=True)
    print(f"\nmedians over {args.rounds} rounds (loadavg {loadavg()}):")
    head = f"{'database':<11} {'code of':<14} {'store CPU ms/f':>15} {'of which pg':>12} {'SQL/f':>6}"
    print(f"{head} {'intake CPU ms/f':>16} {'intake SQL/f':>13} {'store wall ms/f':>16}")
    for (name, database), rs in results.items():

        def med(key: str, rs: list[dict[str, Any]] = rs) -> float:
            values = sorted(float(r[key]) for r in rs)
            return values[len(values) // 2]

        print(
            f"{database:<11} {name:<14} {med('cpu_ms_f'):>15.2f} {med('pg_ms_f'):>12.2f} {med('sql_f'):>6.2f}"
            f" {med('intake_cpu_ms_f'):>16.2f} {med('intake_sql_f'):>13.2f} {med('wall_ms_f'):>16.2f}"
        )
    return 0


# --------------------------------------------------------------------------- one run


def worker(batch_path: Path, database: str, profile: bool) -> int:
    """One run on a fresh database: intake and claim (measured apart), then the timed store."""
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    from db.jobs import claim_jobs
    from db.migrate import upgrade
    from services.context import build_context
    from services.ingestion import ClaimedFile, start_ingests, store_batch
    from services.intake import intake_many
    from services.outcomes import ClaimedJob
    from settings import Settings

    files, parsed = pickle.loads(batch_path.read_bytes())
    url = None
    if database == "postgresql":
        from tests.conftest import create_postgres_database

        url = create_postgres_database("dxa_bench_store")
    try:
        with tempfile.TemporaryDirectory(prefix="dxa-bench-store-run-") as tmp:
            settings = Settings(
                data_dir=Path(tmp) / "data", inbox=Path(tmp) / "inbox", database_url=url, broker_url=None
            )
            ctx = build_context(settings)
            upgrade(ctx.engine)
            statements = [0]
            shapes: dict[str, int] = {}
            storing = [False]

            def count(_conn: Any, _cursor: Any, text: str, *_: Any, **__: Any) -> None:
                statements[0] += 1
                if storing[0]:
                    shape = " ".join(text.split())[:90]
                    shapes[shape] = shapes.get(shape, 0) + 1

            event.listen(ctx.engine, "before_cursor_execute", count)
            db_name = str(make_url(url).database) if url else ""

            def pg() -> float:
                return postgres_cpu(db_name) if db_name else 0.0

            paths = []
            for rel, data in files:
                path = settings.inbox_dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                paths.append(path)
            # Intake (register + claim), as the watcher and a runner do it: measured apart.
            s0, c0, p0 = statements[0], time.process_time(), pg()
            job_ids: list[int] = []
            for i in range(0, len(paths), BATCH):
                for res in intake_many(ctx, paths[i : i + BATCH], copy=False):
                    if not isinstance(res, Exception) and res.job_id is not None:
                        job_ids.append(res.job_id)
            chunks = []
            for i in range(0, len(job_ids), BATCH):
                with ctx.sessions.begin() as session:
                    jobs = [ClaimedJob.of(job) for job in claim_jobs(session, job_ids[i : i + BATCH], worker="bench")]
                    chunks.append(start_ingests(ctx, session, jobs))
            intake_s, intake_cpu, intake_pg = statements[0] - s0, time.process_time() - c0, pg() - p0
            # The store, timed alone.
            profiler = cProfile.Profile() if profile else None
            stored = 0
            s0, c0, p0, w0 = statements[0], time.process_time(), pg(), time.perf_counter()
            storing[0] = profile
            for chunk in chunks:
                items = [(w, parsed[w.sha256]) for w in chunk if isinstance(w, ClaimedFile)]
                if profiler:
                    profiler.enable()
                results = store_batch(ctx, items)
                if profiler:
                    profiler.disable()
                stored += len(results)
            store_s, store_cpu, store_pg = statements[0] - s0, time.process_time() - c0, pg() - p0
            wall = time.perf_counter() - w0
            outcomes: dict[str, int] = {}
            with ctx.sessions() as session:
                from sqlalchemy import func, select

                from db.models import SourceFile

                for status, n in session.execute(select(SourceFile.status, func.count()).group_by(SourceFile.status)):
                    outcomes[status] = n
                digest = _digest(session, str(settings.data_dir))
            ctx.engine.dispose()
    finally:
        if url:
            from tests.conftest import drop_postgres_database

            drop_postgres_database(url)
    if profiler:
        print(f"--- statements of the store ({database}), by shape")
        for shape, n in sorted(shapes.items(), key=lambda kv: -kv[1])[:30]:
            print(f"{n:6d}  {shape}")
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats(key).print_stats(25)
            print(f"--- cProfile of the store ({database}), by {key}")
            print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    n = max(stored, 1)
    print(
        json.dumps(
            {
                "files": stored,
                "outcomes": outcomes,
                "digest": digest,
                "code": str(Path(sys.modules["services.ingestion"].__file__ or "").parents[1]),
                "cpu_ms_f": (store_cpu + store_pg) * 1000 / n,
                "pg_ms_f": store_pg * 1000 / n,
                "sql_f": store_s / n,
                "wall_ms_f": wall * 1000 / n,
                "intake_cpu_ms_f": (intake_cpu + intake_pg) * 1000 / len(files),
                "intake_sql_f": intake_s / len(files),
            }
        )
    )
    return 0


_TABLES = (
    "patients",
    "devices",
    "device_lscs",
    "exams",
    "measurements",
    "measurement_conflicts",
    "source_files",
    "jobs",
)
_MOMENTS = {"created_at", "updated_at", "received_at", "last_seen_at", "finished_at", "started_at", "run_after"}


def _digest(session: Any, data_dir: str) -> str:
    """A hash of what the store left in the tables it writes (times and the run's folder left
    out): equal for two checkouts that store the same batch alike."""
    import hashlib

    from sqlalchemy import select

    from db.models import Base

    h = hashlib.sha256()
    # Patients by their key, not their id: PostgreSQL's upsert uses a sequence value per row
    # it locks, so ids may differ where nothing else does.
    patients_table = Base.metadata.tables["patients"]
    key = {
        pk: f"{i}|{s}"
        for pk, i, s in session.execute(
            select(patients_table.c.id, patients_table.c.identifier, patients_table.c.issuer)
        )
    }
    # Exams by their key too: PostgreSQL reserves a batch's exam ids from the sequence at once
    # (`db.exams._next_exam_id`), and an id it reserved and did not use leaves a gap.
    exams_table = Base.metadata.tables["exams"]
    exam_key = {
        pk: f"{key[patient]}|{on}|{device}"
        for pk, patient, on, device in session.execute(
            select(exams_table.c.id, exams_table.c.patient_id, exams_table.c.exam_date, exams_table.c.device_id)
        )
    }
    for name in _TABLES:
        table = Base.metadata.tables[name]
        columns = [c for c in table.c if c.name not in _MOMENTS and c.name != "worker"]
        rows = []
        for row in session.execute(select(*columns)):
            values = dict(zip([c.name for c in columns], row, strict=True))
            if name in ("patients", "exams"):
                values.pop("id")
            if values.get("exam_id") is not None:
                values["exam_id"] = exam_key[values["exam_id"]]
            if values.get("patient_id") is not None:
                values["patient_id"] = key[values["patient_id"]]
            if name == "jobs":
                values.pop("id")
                values["dedup_key"] = None  # names the patient id
            rows.append(json.dumps(values, sort_keys=True, default=str))
        for text in sorted(rows):
            h.update(text.replace(data_dir, "DATA").encode())
    return h.hexdigest()[:12]


if __name__ == "__main__":
    sys.exit(main())
