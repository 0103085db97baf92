"""Web latency benchmark (issue 5): load synthetic patients, then time the pages clinicians use most.

    .venv/bin/python -m bench.web --database-url postgresql://postgres@127.0.0.1:5432/dxa_bench
    .venv/bin/python -m bench.web --sqlite --patients 2000        # a quick look, no server needed

The database must be empty (it is migrated here). Each patient gets 5 exams on one of 20
machines with two monitoring sites each (100 000 patients -> 1 000 000 measurements), their
L1-L4 comparisons, a next-scan row and, for some, an open alert. Prints p50/p95 of the patient
page, the trend API and the patients list with filters, against the issue's targets
(patient page p95 < 50 ms, patients list p95 < 150 ms). Requests go through the ASGI app in
process (TestClient), so the figures are the app and the database, not the network.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert

from db import accounts
from db.engine import make_engine, session_factory
from db.migrate import upgrade
from db.models import AlertRow, ComparisonRow, Device, Exam, Measurement, NextScanRow, Patient
from dxa.settings import Settings
from web.app import create_app

TODAY = date(2024, 6, 1)
EXAMS_PER_PATIENT = 5
BATCH = 2000


def load(factory: Any, patients: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with factory() as session:
        session.execute(
            insert(Device),
            [
                {
                    "id": d,
                    "manufacturer": "HOLOGIC",
                    "model": "Horizon W",
                    "serial": f"S{d:05d}",
                    "identity_key": f"hologic|horizon w|s{d:05d}",
                    "model_key": "hologic|horizon w",
                    "identity_strength": "serial",
                    "software_versions": ["13.6"],
                }
                for d in range(1, 21)
            ],
        )
        session.commit()
    exam_id = measurement_id = comparison_id = 0
    for start in range(0, patients, BATCH):
        ids = range(start + 1, min(start + BATCH, patients) + 1)
        p_rows, e_rows, m_rows, c_rows, n_rows, a_rows = [], [], [], [], [], []
        for pid in ids:
            p_rows.append({"id": pid, "identifier": f"{1000000 + pid}", "issuer": "", "name": f"Bench^{pid}"})
            device = rng.randint(1, 20)
            first = date(2010, 1, 1) + timedelta(days=rng.randint(0, 2000))
            spine = rng.uniform(0.7, 1.1)
            exams = []
            for k in range(EXAMS_PER_PATIENT):
                exam_id += 1
                day = first + timedelta(days=730 * k)
                e_rows.append({"id": exam_id, "patient_id": pid, "device_id": device, "exam_date": day})
                exams.append(exam_id)
                for site, side, bmd in (("L1-L4", None, spine), ("total_hip", "mean", spine * 0.85)):
                    measurement_id += 1
                    value = round(bmd * (1 + rng.uniform(-0.04, 0.04)), 3)
                    m_rows.append(
                        {
                            "id": measurement_id,
                            "exam_id": exam_id,
                            "site": site,
                            "side": side,
                            "bmd": value,
                            "t_score": round((value - 1.0) / 0.11, 1),
                        }
                    )
            for k in range(1, EXAMS_PER_PATIENT):
                for reference, ref in (("baseline", exams[0]), ("previous", exams[k - 1])):
                    comparison_id += 1
                    pct = round(rng.uniform(-6, 6), 2)
                    c_rows.append(
                        {
                            "id": comparison_id,
                            "patient_id": pid,
                            "position": comparison_id,
                            "site": "L1-L4",
                            "side": None,
                            "from_exam_id": ref,
                            "to_exam_id": exams[k],
                            "reference": reference,
                            "status": "ok",
                            "delta_g_cm2": pct / 100,
                            "percent_change": pct,
                            "lsc_g_cm2": 0.03,
                            "lsc_source": "study",
                            "significance": "gain" if pct > 3 else "loss" if pct < -3 else "stable",
                            "dissimilar": False,
                        }
                    )
            due = first + timedelta(days=730 * EXAMS_PER_PATIENT + rng.randint(-3000, 600))
            n_rows.append(
                {
                    "patient_id": pid,
                    "due": due,
                    "rule_id": "untreated",
                    "reason": "bench",
                    "alerts": [],
                    "who_category": "low_bone_mass",
                }
            )
            if rng.random() < 0.05:
                a_rows.append({"patient_id": pid, "code": "loss_on_treatment", "message": "bench", "state": "open"})
        with factory() as session:
            for table, rows in (
                (Patient, p_rows),
                (Exam, e_rows),
                (Measurement, m_rows),
                (ComparisonRow, c_rows),
                (NextScanRow, n_rows),
                (AlertRow, a_rows),
            ):
                if rows:
                    session.execute(insert(table), rows)
            session.commit()
        print(f"loaded {ids[-1]} patients", flush=True)


def timed(client: TestClient, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        t0 = time.perf_counter()
        response = client.get(path)
        out.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}")
    return out


def report(name: str, ms: list[float], target: float | None) -> None:
    ordered = sorted(ms)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    verdict = "" if target is None else (" ok" if p95 < target else f" OVER the {target:.0f} ms target")
    print(f"{name:<34} n={len(ms):<4} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms{verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an empty PostgreSQL database")
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dxa-bench-"))
    url = f"sqlite:///{tmp / 'bench.db'}" if args.sqlite or not args.database_url else args.database_url
    upgrade(url)
    factory = session_factory(make_engine(url))
    t0 = time.perf_counter()
    load(factory, args.patients)
    print(
        f"load: {time.perf_counter() - t0:.1f} s for {args.patients} patients, "
        f"{args.patients * EXAMS_PER_PATIENT * 2} measurements"
    )
    with factory() as session:
        accounts.create_user(session, "bench", "bench-password", "clinician")
        session.commit()
    app = create_app(Settings(data_dir=tmp, database_url=url, secret_key="bench"), factory, today=lambda: TODAY)
    rng = random.Random(2)
    with TestClient(app) as client:
        login = client.get("/login").text
        token = login.split('name="csrf_token" value="')[1].split('"')[0]
        client.post("/login", data={"username": "bench", "password": "bench-password", "csrf_token": token})
        pick: Callable[[], int] = lambda: 1000000 + rng.randint(1, args.patients)  # noqa: E731
        n = args.requests
        timed(client, [f"/patients/{pick()}" for _ in range(5)])  # warm-up
        report("patient page", timed(client, [f"/patients/{pick()}" for _ in range(n)]), 50)
        report("trend API", timed(client, [f"/api/patients/{pick()}/trend" for _ in range(n)]), 50)
        report("patients list", timed(client, [f"/patients?page={rng.randint(1, 50)}" for _ in range(n)]), 150)
        report(
            "patients list ?overdue",
            timed(client, [f"/patients?overdue=true&page={rng.randint(1, 20)}" for _ in range(n)]),
            150,
        )
        report("patients list ?alerts", timed(client, ["/patients?alerts=true" for _ in range(n)]), 150)
        report("patients list ?q=", timed(client, [f"/patients?q={rng.randint(100, 999)}" for _ in range(n)]), 150)


if __name__ == "__main__":
    main()
