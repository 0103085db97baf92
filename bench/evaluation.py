"""Evaluation benchmark (issue 13): the cost of evaluating every patient of a realistic database as
the runners do (`evaluate_jobs` in batches of 32 and 64, what the embedded runner and a Celery
worker run) and as the daily refresh does (`evaluate_all`), on SQLite and PostgreSQL.

    .venv/bin/python bench/evaluation.py --patients 2000 --rounds 2
    .venv/bin/python bench/evaluation.py --compare /path/to/other/checkout   # old vs new, alternated
    .venv/bin/python bench/evaluation.py --backends sqlite --modes all       # a quick look

The database comes from bench/web.py's generator (`load`): hospital-shaped histories (1 to 12
exams, machines replaced, patients moving between campuses, outside reports from machines without
a serial, therapies) with the comparisons, next scans and alerts the monitor would have stored
(evaluated once more by this checkout's code after the load, so that they are exactly what it
stores), so an evaluation here is the daily refresh's steady state; `fresh64` deletes them first,
so every verdict is written anew, as in a back-load. The real ingest of the shared samples'
variants would give a few distinct histories only, and take minutes per thousand patients.

It is loaded once per backend into a template; every timed run starts from a fresh copy of it (a
file copy on SQLite, `CREATE DATABASE … TEMPLATE` on PostgreSQL) in a process of its own, whose
code is this checkout's or, with `--compare`, another checkout's (its source tree first on
PYTHONPATH, as bench/pipeline.py does), alternated run by run so both see the same load. Printed
per run: CPU ms per patient of the evaluating process (and of its PostgreSQL backend), SQL
statements and commits per patient, wall time; and a digest of the rows the run left (comparisons,
next scans, alerts, audit events, without ids and times), which old and new code must share.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# jobsN: evaluation jobs in batches of N (the runners); all: the daily refresh; freshN: jobsN with the
# stored verdicts (comparisons, next scans, alerts) deleted first, so every one is written anew, as
# a back-load's first evaluation of a patient is (the other modes are the steady state: the same verdicts)
MODES = ("jobs32", "jobs64", "all", "fresh64")


# --------------------------------------------------------------------------- the timed child


def _child(url: str, mode: str) -> None:
    """One timed run in this process, with the code first on sys.path (PYTHONPATH); one JSON line out."""
    from sqlalchemy import delete, event, select, text
    from sqlalchemy.engine import Engine

    import services.evaluation as evaluation
    from db.models import AlertRow, AuditEvent, ComparisonRow, Job, NextScanRow, Patient
    from services.context import build_context
    from services.outcomes import ClaimedJob
    from services.queue import queue_evaluations
    from settings import Settings

    counts = {"statements": 0, "commits": 0}
    stages = _time_stages(evaluation)
    event.listen(
        Engine, "before_cursor_execute", lambda *_, **__: counts.__setitem__("statements", counts["statements"] + 1)
    )
    event.listen(Engine, "commit", lambda *_: counts.__setitem__("commits", counts["commits"] + 1))
    with tempfile.TemporaryDirectory(prefix="dxa-bench-eval-") as tmp:
        ctx = build_context(Settings(database_url=url, data_dir=Path(tmp) / "data"))
        postgres = ctx.engine.dialect.name == "postgresql"
        backends: set[int] = set()
        if postgres:
            event.listen(ctx.engine, "connect", lambda conn, _: backends.add(_backend_pid(conn)))
        with ctx.sessions() as session:
            ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
        jobs: list[Any] = []
        if mode.startswith("fresh"):
            with ctx.sessions.begin() as session:
                for entity in (ComparisonRow, NextScanRow, AlertRow):
                    session.execute(delete(entity))
            mode = f"jobs{mode[5:]}"
        if mode != "all":
            queue_evaluations(ctx, ids)
            with ctx.sessions() as session:
                rows = session.execute(
                    select(Job.id, Job.patient_id).where(Job.kind == "evaluate_patient").order_by(Job.id)
                ).all()
            jobs = [ClaimedJob(job_id, "evaluate_patient", 1, None, pid) for job_id, pid in rows]
        size = int(mode[4:]) if mode != "all" else 0
        before = dict(counts)
        server = _cpu_of(backends)
        cpu, wall = time.process_time(), time.perf_counter()
        if mode == "all":
            evaluation.evaluate_all(ctx)
        else:
            for start in range(0, len(jobs), size):
                evaluation.evaluate_jobs(ctx, jobs[start : start + size])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        server = _cpu_of(backends) - server
        spent = {k: counts[k] - before[k] for k in counts}
        digest = hashlib.sha256()
        with ctx.sessions() as session:
            for entity in (ComparisonRow, NextScanRow, AlertRow, AuditEvent):
                table = entity.__table__
                shown = []
                for row in session.execute(select(table)):
                    values = {
                        k: v
                        for k, v in row._mapping.items()
                        # open_alert: a flag of main after bec91f8 that code before it does not keep
                        if k not in ("id", "computed_at", "raised_at", "occurred_at", "resolved_at", "open_alert")
                    }
                    shown.append(json.dumps(values, sort_keys=True, default=str))
                digest.update("\n".join(sorted(shown)).encode())
            if postgres:
                session.execute(text("SELECT 1"))
        ctx.engine.dispose()
    print(
        json.dumps(
            {
                "patients": len(ids),
                "cpu_s": cpu,
                "server_cpu_s": server if postgres else None,
                "wall_s": wall,
                **spent,
                **{f"{stage}_cpu_s": spent_s for stage, spent_s in stages.items()},
                "digest": digest.hexdigest()[:12],
                "code": str(Path(evaluation.__file__).resolve().parents[1]),
            }
        )
    )


# CPU of the evaluating process split by stage: the names `services.evaluation` calls, wrapped in
# that module (old and new code alike); what runs outside them (transaction, claims, jobs) is "other".
STAGES = {
    "lock_patients": "load",
    "load_histories": "load",
    "evaluate_patient": "evaluate",
    "save_evaluations": "store",
    "finish_job_ids": "store",
    "finish_job_id": "store",
}


def _time_stages(module: Any) -> dict[str, float]:
    """Wrap the stage functions `module` calls with CPU timers (not nested: a stage called inside
    another one is counted once, by the outer one); the returned dict fills as they run."""
    spent = dict.fromkeys(("load", "evaluate", "store"), 0.0)
    depth = [0]

    def timed(name: str, stage: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[stage] += time.process_time() - start
                depth[0] -= 1

        return wrapper

    for name, stage in STAGES.items():
        if hasattr(module, name):
            setattr(module, name, timed(name, stage, getattr(module, name)))
    return spent


def _backend_pid(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def _cpu_of(pids: set[int]) -> float:
    """User + system CPU seconds of these (PostgreSQL backend) processes, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# --------------------------------------------------------------------------- the driver


class Backend:
    """A loaded template and fresh copies of it."""

    def __init__(self, name: str, tmp: Path, patients: int) -> None:
        sys.path.insert(0, str(ROOT))
        from db.migrate import upgrade

        self.name = name
        self.tmp = tmp
        self.copies: list[str] = []
        if name == "sqlite":
            self.template = f"sqlite:///{tmp / 'template.db'}"
        else:
            from tests.conftest import create_postgres_database

            self.template = create_postgres_database("dxa_bench_eval")
        upgrade(self.template)
        from bench.web import load  # the generator (imports the web app, in this process only)

        t0 = time.perf_counter()
        counts = load(self.template, patients, 2 if name == "postgres" else 1)
        print(f"{name}: loaded in {time.perf_counter() - t0:.0f} s: {counts}", flush=True)
        # The generator stores verdicts without their phrases (`comparisons.notes`), as rows from
        # before them: evaluated once here, they are what the service stores, so that a timed run
        # re-evaluates a steady state (nothing changed since the last evaluation: the daily refresh)
        from services.context import build_context
        from services.evaluation import evaluate_all
        from settings import Settings

        t0 = time.perf_counter()
        ctx = build_context(Settings(database_url=self.template, data_dir=tmp / "template-data"))
        evaluate_all(ctx)
        ctx.engine.dispose()
        print(f"{name}: evaluated once in {time.perf_counter() - t0:.0f} s", flush=True)

    def copy(self) -> str:
        if self.name == "sqlite":
            target = self.tmp / f"run{len(self.copies)}.db"
            shutil.copyfile(self.tmp / "template.db", target)
            url = f"sqlite:///{target}"
        else:
            import psycopg
            from sqlalchemy.engine import make_url

            from tests.conftest import _admin_conninfo

            name = f"{make_url(self.template).database}_r{len(self.copies)}"
            with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(self.template).database}"')
            url = make_url(self.template).set(database=name).render_as_string(hide_password=False)
        self.copies.append(url)
        return url

    def drop(self, url: str) -> None:
        if self.name == "sqlite":
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        else:
            from tests.conftest import drop_postgres_database

            drop_postgres_database(url)

    def close(self) -> None:
        if self.name == "postgres":
            from tests.conftest import drop_postgres_database

            drop_postgres_database(self.template)


def run(code: Path, url: str, mode: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", url, mode],
        env=env,
        cwd=str(code),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the run failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--compare", type=Path, help="another checkout's source tree, run alternated with this one")
    args = ap.parse_args(argv)
    codes = [("new", ROOT)] + ([("old", args.compare.resolve())] if args.compare else [])
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dxa-bench-eval-") as tmp:
        for name in args.backends:
            backend = Backend(name, Path(tmp), args.patients)
            try:
                for rnd in range(args.rounds):
                    for mode in args.modes:
                        for label, code in codes if rnd % 2 == 0 else codes[::-1]:
                            url = backend.copy()
                            try:
                                r = run(code, url, mode)
                            finally:
                                backend.drop(url)
                            results.setdefault((name, mode, label), []).append(r)
                            _line(name, mode, label, r)
            finally:
                backend.close()
    print(f"\nloadavg at end: {Path('/proc/loadavg').read_text().strip()}")
    print("medians (per patient):")
    for (name, mode, label), runs in results.items():
        _line(
            name, mode, f"{label} median", {k: _median(runs, k) for k in runs[0] if k not in ("digest", "code")}, runs
        )


def _median(runs: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def _line(name: str, mode: str, label: str, r: dict[str, Any], runs: list[dict[str, Any]] | None = None) -> None:
    n = r["patients"]
    server = f", postgres {1000 * r['server_cpu_s'] / n:5.2f}" if r.get("server_cpu_s") is not None else ""
    split = "/".join(f"{1000 * (r.get(f'{stage}_cpu_s') or 0.0) / n:4.2f}" for stage in ("load", "evaluate", "store"))
    digests = {x["digest"] for x in runs} if runs else {r["digest"]}
    print(
        f"{name:8} {mode:7} {label:11} CPU {1000 * r['cpu_s'] / n:5.2f} ms/patient (load/evaluate/store {split})"
        f"{server}; "
        f"SQL {r['statements'] / n:5.2f}/patient, commits {r['commits'] / n:5.3f}/patient; "
        f"wall {r['wall_s']:6.2f} s ({n / r['wall_s']:5.0f} patients/s); rows {','.join(sorted(digests))}",
        flush=True,
    )


if __name__ == "__main__":
    main()
