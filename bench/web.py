"""Web latency benchmark (issue 5): load synthetic patients, then time the pages clinicians use most.

    createdb -h 127.0.0.1 -U postgres dxa_bench_web
    .venv/bin/python bench/web.py --database-url postgresql://postgres@127.0.0.1:5432/dxa_bench_web --rounds 3
    .venv/bin/python bench/web.py --database-url ... --skip-load      # time an already loaded database again
    .venv/bin/python bench/web.py --database-url ... --skip-load --profile /tmp/page.txt   # where a page's time goes
    .venv/bin/python bench/web.py --database-url ... --skip-load --page-only --compare /work/main-before
    dropdb -h 127.0.0.1 -U postgres dxa_bench_web
    .venv/bin/python bench/web.py --sqlite --patients 2000              # a quick look, no server needed

(`python -m bench.web` from the repository root works too.)

The database must be empty (it is migrated here). On PostgreSQL the data is generated in
`--jobs` processes and written with COPY into unlogged staging tables, then inserted into the
real tables in the order a live database received the rows (by exam date): a patient's exams and
measurements sit on pages years apart, as in a hospital's database, not side by side as a
patient-by-patient load would put them. About four minutes for 100 000 patients on two cores.
On SQLite rows are inserted directly, patient by patient.

The data is shaped like a hospital's archive rather than a grid: 100 000 patients with 1 to 12
exams each (most have one to three), about 1 000 000 measurements in all; four campuses whose
machines were replaced over the years, patients who move between campuses and outside reports
from a machine without a serial, so refused and cross-calibrated comparisons occur where they
would; therapies (bisphosphonates, denosumab, glucocorticoids, stops), 8-digit MRNs (some of
another issuer, some with a "/"), DICOM-style names. Comparisons, WHO category, next scan and
alerts are computed by the real monitoring core (`monitor.evaluate`) from that history, so they
are what the service would have stored. Not loaded: source files, audit events and jobs, which
the timed pages do not read (they only append audit events).

Prints p50/p95 of the patient page, measured three ways side by side on the same patients (the
order turned each patient, so none always reads a patient first from disk): in process through
the TestClient; over real HTTP, keep-alive, from a server process started from this checkout as
`dxa web` serves the app (uvicorn, `SERVER_CODE`), signed in like a browser, so the ratio is what a
browser sees; and its SQL floor (the same data read by hand-written SQL through the driver's
cursor, `FLOOR_SQL`; PostgreSQL only), with a second floor adding the page's own sign-in check
and durably committed audit event. Then the CPU per page (this process for the TestClient, the
server process over HTTP), the ratios to the floor, the SQL statements a page runs, the trend API
and the patients list with each filter (TestClient and HTTP alternated) against the issue's
targets (patient page p95 < 50 ms, lists p95 < 150 ms), each `--rounds` times to show the spread,
then the peak RSS of this process and of the largest load worker. `--compare TREE` times a
second server started from another checkout (e.g. of main before a change) beside this one's,
and first checks that both serve byte-identical pages (CSRF tokens masked) for 300 patients in
English and Chinese. `--profile FILE` samples the HTTP server with py-spy. Patients are picked
uniformly, so the page mix follows the exam-count mix above.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

# Run as a script, this file's folder comes first on sys.path and this module, named `web`, would
# hide the `web` package: the repository root goes in front of it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, Table, event, insert, text

from db import accounts
from db.converters import alerts_to_json, device_identity_key, model_key
from db.engine import make_engine, session_factory
from db.migrate import upgrade
from db.models import (
    AlertRow,
    ComparisonRow,
    CrossCalibrationRow,
    Device,
    Exam,
    Measurement,
    NextScanRow,
    Patient,
    PrecisionStudy,
    TherapyRow,
)
from monitor import identity
from monitor import model as m
from monitor.config import MonitoringConfig
from monitor.drugs import therapy_from_agent
from monitor.evaluate import evaluate_patient
from services.context import build_context
from settings import Settings
from settings.monitoring import load_monitoring_config
from web.app import create_app

TODAY = date(2024, 6, 1)
SEED = 1
CHUNK = 5000  # patients generated, evaluated and written per round
STAMP = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
T = TypeVar("T")


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# exams per patient -> weight: many patients have only a baseline, a few are followed for years
EXAM_COUNTS = {1: 24, 2: 20, 3: 17, 4: 13, 5: 10, 6: 7, 7: 4, 8: 2.5, 9: 1.2, 10: 0.7, 12: 0.6}
FAMILY = _names(
    "MARTIN BERNARD DUBOIS THOMAS ROBERT RICHARD PETIT DURAND LEROY MOREAU SIMON LAURENT LEFEBVRE "
    "MICHEL GARCIA DAVID BERTRAND ROUX VINCENT FOURNIER MOREL GIRARD ANDRE LEFEVRE MERCIER DUPONT "
    "LAMBERT BONNET FRANCOIS MARTINEZ MULLER SCHMIDT SCHNEIDER FISCHER WEBER MEYER WAGNER BECKER "
    "SMITH JOHNSON WILLIAMS BROWN JONES MILLER DAVIS WILSON ANDERSON TAYLOR MOORE JACKSON WHITE "
    "HARRIS CLARK LEWIS ROBINSON WALKER YOUNG ALLEN KING WRIGHT SCOTT GREEN BAKER ADAMS NELSON HILL "
    "ROSSI RUSSO FERRARI ESPOSITO BIANCHI ROMANO COLOMBO RICCI MARINO GRECO LOPEZ GONZALEZ PEREZ "
    "SANCHEZ RAMIREZ TORRES NGUYEN TRAN LE PHAM WANG LI ZHANG LIU CHEN YANG HUANG ZHAO WU ZHOU XU "
    "SUN MA ZHU HU GUO HE LIN LUO KOWALSKI NOWAK WISNIEWSKI O'BRIEN MURPHY KELLY VAN-DAM DE-JONG"
)
GIVEN_F = _names(
    "MARIE JEANNE FRANCOISE MONIQUE CATHERINE NATHALIE ISABELLE SYLVIE ANNE CHRISTINE MARTINE "
    "NICOLE HELENE BRIGITTE ANNA MARIA URSULA HELGA MARGARET PATRICIA LINDA BARBARA ELIZABETH SUSAN "
    "DOROTHY CAROL RUTH SHARON GIULIA ROSA CARMEN PILAR LAN HUONG MEI FANG XIU YING"
)
GIVEN_M = _names("JEAN PIERRE MICHEL ANDRE PHILIPPE HANS KLAUS JOHN ROBERT JAMES GIUSEPPE JOSE MINH WEI JUN")


@dataclass(frozen=True)
class Unit:
    """One densitometer of the synthetic hospital, in service over [start, end) at one campus."""

    pk: int
    manufacturer: str
    model: str
    serial: str | None
    campus: int
    start: date
    end: date
    offset: float  # BMD read relative to the reference Hologic (GE reads ~10 % higher)

    @property
    def machine(self) -> m.Machine:
        return m.Machine(self.manufacturer, self.model, self.serial)


FAR = date(2100, 1, 1)
UNITS = (
    # campus 0: Discovery replaced by a Horizon (different models: refused across the change)
    Unit(1, "HOLOGIC", "Discovery A", "45112", 0, date(2004, 1, 1), date(2016, 3, 1), 1.0),
    Unit(2, "HOLOGIC", "Horizon A", "200457", 0, date(2016, 3, 1), FAR, 1.0),
    # campus 1: Lunar Prodigy replaced by an iDXA, cross-calibrated in vivo at spine and hip
    Unit(3, "GE Healthcare", "Lunar Prodigy", "7314", 1, date(2004, 1, 1), date(2019, 6, 1), 1.10),
    Unit(4, "GE Healthcare", "Lunar iDXA", "210055", 1, date(2019, 6, 1), FAR, 1.09),
    # campus 2: one Horizon W throughout
    Unit(5, "HOLOGIC", "Horizon W", "301877", 2, date(2004, 1, 1), FAR, 1.0),
    # campus 3: two units of one model, the second phantom-calibrated against the first
    Unit(6, "HOLOGIC", "Discovery W", "81020", 3, date(2004, 1, 1), date(2013, 9, 1), 1.0),
    Unit(7, "HOLOGIC", "Discovery W", "83391", 3, date(2013, 9, 1), FAR, 1.005),
    # outside reports (PDF, no serial): never comparable with anything
    Unit(8, "GE Healthcare", "Lunar Prodigy", None, -1, date(2004, 1, 1), FAR, 1.10),
)
CAMPUS_WEIGHTS = (40, 25, 20, 15)
CROSSCALS = (
    (3, 4, "in_vivo", ("L1-L4", "total_hip", "femoral_neck"), {"L1-L4": 0.034, "total_hip": 0.029}, 0.99),
    (6, 7, "phantom", ("L1-L4", "total_hip", "femoral_neck"), {"L1-L4": 0.028, "total_hip": 0.024}, 1.0),
)
LSC = {"L1-L4": 0.026, "total_hip": 0.022, "femoral_neck": 0.031}  # per unit precision study, g/cm²
YOUNG = {"L1-L4": (1.047, 0.110), "total_hip": (0.942, 0.122), "femoral_neck": (0.858, 0.120)}


# --------------------------------------------------------------------------- synthetic history


@dataclass
class Generated:
    """Rows of one chunk in column order of `COLUMNS`, each followed by the date it would have
    been written in a live database (rows are inserted in that order, see `load`)."""

    patients: list[tuple[Any, ...]]
    exams: list[tuple[Any, ...]]
    measurements: list[tuple[Any, ...]]
    therapies: list[tuple[Any, ...]]
    comparisons: list[tuple[Any, ...]]
    next_scans: list[tuple[Any, ...]]
    alerts: list[tuple[Any, ...]]


COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("id", "identifier", "issuer", "name", "birth_date", "sex", "created_at", "updated_at"),
    "exams": (
        "id",
        "patient_id",
        "device_id",
        "exam_date",
        "scan_types",
        "scan_mode",
        "software_version",
        "created_at",
        "updated_at",
    ),
    "measurements": (
        "id",
        "exam_id",
        "site",
        "side",
        "bmd",
        "bmc_g",
        "area_cm2",
        "t_score",
        "z_score",
        "provenance",
        "created_at",
    ),
    "therapies": (
        "id",
        "patient_id",
        "agent",
        "drug_class",
        "start_date",
        "stop_date",
        "glucocorticoid",
        "source",
        "created_at",
    ),
    "comparisons": (
        "id",
        "patient_id",
        "position",
        "site",
        "side",
        "from_exam_id",
        "to_exam_id",
        "reference",
        "status",
        "delta_g_cm2",
        "percent_change",
        "lsc_g_cm2",
        "lsc_source",
        "significance",
        "dissimilar",
        "reason",
        "computed_at",
    ),
    "next_scans": (
        "patient_id",
        "due",
        "rule_id",
        "reason",
        "alerts",
        "who_category",
        "z_below_expected",
        "computed_at",
        "open_alert",
    ),
    "alerts": ("id", "patient_id", "code", "message", "state", "raised_at"),
}
JSON_COLUMNS = {"scan_types", "provenance", "alerts"}
TABLES: dict[str, Table] = {
    "patients": Patient.__table__,  # type: ignore[dict-item]
    "exams": Exam.__table__,  # type: ignore[dict-item]
    "measurements": Measurement.__table__,  # type: ignore[dict-item]
    "therapies": TherapyRow.__table__,  # type: ignore[dict-item]
    "comparisons": ComparisonRow.__table__,  # type: ignore[dict-item]
    "next_scans": NextScanRow.__table__,  # type: ignore[dict-item]
    "alerts": AlertRow.__table__,  # type: ignore[dict-item]
}


@dataclass(frozen=True)
class BenchPatient:
    identifier: str
    issuer: str

    @property
    def path(self) -> str:
        return quote(self.identifier, safe="")

    @property
    def query(self) -> str:
        return f"?{urlencode({'issuer': self.issuer})}" if self.issuer else ""


def _therapy(agent: str, start: date, stop: date | None) -> m.Therapy:
    return replace(_classified(agent), start=start, stop=stop)


@cache
def _classified(agent: str) -> m.Therapy:
    return therapy_from_agent(agent, date(2000, 1, 1))


def _memoise_machine_identity() -> None:
    """The core normalises maker, model and serial text on every machine comparison; the bench
    has eight machines and a million comparisons, so remember the (pure) answers. Same results,
    a fraction of the load time."""
    for name in ("normalize_manufacturer", "normalize_model", "normalize_serial"):
        setattr(identity, name, cache(getattr(identity, name)))


def _unit_at(campus: int, day: date) -> Unit:
    return next(u for u in UNITS if u.campus == campus and u.start <= day < u.end)


def _identifier(rng: random.Random, pk: int) -> tuple[str, str]:
    """Mostly the hospital's 8-digit MRN; some referral numbers of another issuer, a few with '/'."""
    mrn = f"{(pk * 7919 + 10_000_000) % 90_000_000 + 10_000_000}"  # unique, not in load order
    roll = rng.random()
    if roll < 0.03:
        return f"R{2005 + pk % 19}-{pk:06d}", "REFERRAL-NET"
    if roll < 0.04:
        return f"IPP/{mrn}", ""
    return mrn, ""


def _history(rng: random.Random, pk: int, out: Generated) -> tuple[list[m.Exam], list[m.Therapy], date]:
    """One patient's exams (and their measurement rows), therapies (and rows); returns the domain
    objects for the monitoring core and the birth date. Row ids derive from the patient's, so
    chunks can be generated in parallel (ids have gaps, as in any live database)."""
    female = rng.random() < 0.85
    birth = date(1930, 1, 1) + timedelta(days=rng.randint(0, 45 * 365))
    identifier, issuer = _identifier(rng, pk)
    given = rng.choice(GIVEN_F if female else GIVEN_M)
    name = f"{rng.choice(FAMILY)}^{given}" if rng.random() < 0.97 else None
    count = rng.choices(list(EXAM_COUNTS), weights=list(EXAM_COUNTS.values()))[0]
    first = max(birth + timedelta(days=50 * 365), date(2004, 1, 1)) + timedelta(days=rng.randint(0, 6000))
    first = min(first, TODAY - timedelta(days=30))
    out.patients.append((pk, identifier, issuer, name, birth, "F" if female else "M", STAMP, STAMP, first))
    home = rng.choices(range(4), weights=CAMPUS_WEIGHTS)[0]
    both_hips = rng.random() < 0.25
    radius = rng.random() < 0.1
    base = {"L1-L4": rng.gauss(0.93, 0.14)}
    base["total_hip"] = base["L1-L4"] * rng.gauss(0.84, 0.05)
    base["femoral_neck"] = base["total_hip"] * rng.gauss(0.86, 0.04)
    areas = {"L1-L4": rng.gauss(60, 6), "total_hip": rng.gauss(35, 3), "femoral_neck": rng.gauss(5, 0.4)}
    yearly = rng.gauss(-0.008, 0.012)

    therapies: list[m.Therapy] = []
    if rng.random() < 0.45:
        start = first + timedelta(days=rng.randint(10, 400))
        agent = rng.choices(
            ("Alendronate 70 mg weekly", "risedronate", "zoledronic acid", "denosumab", "teriparatide", "raloxifene"),
            weights=(45, 12, 15, 18, 4, 6),
        )[0]
        stop = start + timedelta(days=rng.randint(300, 2600)) if rng.random() < 0.35 else None
        if stop is not None and stop >= TODAY:
            stop = None
        therapies.append(_therapy(agent, start, stop))
        if stop is not None and rng.random() < 0.3:
            therapies.append(_therapy("denosumab", stop + timedelta(days=30), None))
    if rng.random() < 0.08:
        start = first - timedelta(days=rng.randint(30, 900))
        therapies.append(_therapy("prednisolone", start, None if rng.random() < 0.5 else first))
    for j, t in enumerate(therapies):
        out.therapies.append(
            (pk * 4 + j, pk, t.agent, t.drug_class, t.start, t.stop, t.glucocorticoid, "import:bench", STAMP, t.start)
        )

    exams: list[m.Exam] = []
    day = first
    for k in range(count):
        if day > TODAY:
            break
        roll = rng.random()
        unit = UNITS[-1] if roll < 0.03 else _unit_at(rng.randrange(4) if roll < 0.12 else home, day)
        exam_pk = pk * 16 + k
        years = (day - first).days / 365.25
        treated = any(t.drug_class != "none" and t.start <= day for t in therapies)
        trend = (1 + yearly + (0.02 if treated else 0)) ** years
        sites: list[tuple[str, str | None]] = [("L1-L4", None), ("total_hip", "left"), ("femoral_neck", "left")]
        if both_hips:
            sites += [
                ("total_hip", "right"),
                ("femoral_neck", "right"),
                ("total_hip", "mean"),
                ("femoral_neck", "mean"),
            ]
        if radius:
            sites.append(("radius_33", "left"))
        measurements = []
        for j, (site, side) in enumerate(sites):
            key = site if site in base else "femoral_neck"
            bmd = round(max(0.3, base[key] * trend * unit.offset * rng.gauss(1, 0.012)), 3)
            area = round(areas.get(key, 2.5) * rng.gauss(1, 0.012 if rng.random() < 0.95 else 0.04), 2)
            young, sd = YOUNG.get(site, (0.70, 0.06))
            t_score = round((bmd / unit.offset - young) / sd, 1)
            z_score = round(t_score + (day - birth).days / 365.25 * 0.025, 1)
            origin = {"file": None, "at": f"page 1, {site} row"}
            provenance = {"bmd": origin, "t_score": origin, "z_score": origin, "area_cm2": origin}
            out.measurements.append(
                (
                    exam_pk * 8 + j,
                    exam_pk,
                    site,
                    side,
                    bmd,
                    round(bmd * area, 2),
                    area,
                    t_score,
                    z_score,
                    provenance,
                    STAMP,
                    day,
                )
            )
            measurements.append(m.Measurement(site, side, bmd, t_score, z_score, area))
        software = "13.6.0.7" if unit.manufacturer == "HOLOGIC" else "16 SP2"
        scan = ["spine", "hip", "forearm"] if radius else ["spine", "hip"]
        out.exams.append((exam_pk, pk, unit.pk, day, scan, "Array", software, STAMP, STAMP, day))
        exams.append(m.Exam(str(exam_pk), day, unit.machine, tuple(measurements)))
        day += timedelta(days=rng.choice((365, 540, 730, 730, 730, 1095)) + rng.randint(-40, 60))
    return exams, therapies, birth


def generate(first_pk: int, last_pk: int, seed: int, config: MonitoringConfig) -> Generated:
    """Patients `first_pk`..`last_pk` with their history and what the monitoring core makes of it."""
    rng = random.Random(seed * 1_000_003 + first_pk)
    lscs = [m.SiteLsc(u.machine, site, lsc, lsc / 2.77) for u in UNITS if u.serial for site, lsc in LSC.items()]
    units = {u.pk: u for u in UNITS}
    crosscals = [
        m.CrossCalibration(
            units[a].machine,
            units[b].machine,
            kind,  # type: ignore[arg-type]
            frozenset(sites),
            tuple(lsc.items()),
            slope=slope,
            performed_on=units[b].start,
        )
        for a, b, kind, sites, lsc, slope in CROSSCALS
    ]
    out = Generated([], [], [], [], [], [], [])
    for pk in range(first_pk, last_pk + 1):
        exams, therapies, birth = _history(rng, pk, out)
        machines = {e.machine for e in exams}  # as the worker loads them: only this patient's machines
        own = [s for s in lscs if s.machine in machines]
        evaluation = evaluate_patient(exams, therapies, own, crosscals, config, TODAY, birth_date=birth)
        evaluated = exams[-1].date  # the last evaluation rewrote the comparisons and next scan
        for position, c in enumerate(evaluation.comparisons):
            out.comparisons.append(
                (
                    pk * 256 + position,
                    pk,
                    position,
                    c.site,
                    c.side,
                    int(c.from_exam),
                    int(c.to_exam),
                    c.reference,
                    c.status,
                    c.delta_g_cm2,
                    c.percent_change,
                    c.lsc_g_cm2,
                    c.lsc_source,
                    c.significance,
                    c.dissimilar,
                    c.reason,
                    STAMP,
                    evaluated,
                )
            )
        alerts = {a.code: a for a in (*evaluation.alerts, *evaluation.next_scan.alerts)}
        nxt = evaluation.next_scan
        out.next_scans.append(
            (
                pk,
                nxt.due,
                nxt.rule_id,
                nxt.reason,
                alerts_to_json(alerts.values()),
                evaluation.who_category,
                evaluation.z_below_expected,
                STAMP,
                bool(alerts),  # every alert of the bench is open (db.history keeps this flag live)
                evaluated,
            )
        )
        for j, alert in enumerate(alerts.values()):
            raised = STAMP - timedelta(days=rng.randint(0, 700))
            out.alerts.append((pk * 8 + j, pk, alert.code, alert.message, "open", raised, raised.date()))
    return out


# --------------------------------------------------------------------------- writing


def _copy(conn: Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: COPY into the unlogged staging table (an order of magnitude faster than INSERT).
    SQLite: plain executemany into the table itself."""
    if not rows:
        return
    columns = COLUMNS[table]
    if conn.dialect.name != "postgresql":
        conn.execute(insert(TABLES[table]), [dict(zip(columns, row[:-1], strict=True)) for row in rows])
        return
    as_json = [i for i, column in enumerate(columns) if column in JSON_COLUMNS]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY stage_{table} ({', '.join(columns)}, written) FROM STDIN") as copy:
        for row in rows:
            if as_json:
                row = tuple(json.dumps(v) if i in as_json else v for i, v in enumerate(row))
            copy.write_row(row)


def _reference_rows(conn: Connection) -> None:
    conn.execute(
        insert(Device),
        [
            {
                "id": u.pk,
                "manufacturer": u.manufacturer,
                "model": u.model,
                "serial": u.serial,
                "identity_key": device_identity_key(u.manufacturer, u.model, u.serial),
                "model_key": model_key(u.manufacturer, u.model),
                "identity_strength": "serial" if u.serial else "weak",
                "software_versions": ["13.6.0.7"] if u.manufacturer == "HOLOGIC" else ["16 SP2"],
            }
            for u in UNITS
        ],
    )
    conn.execute(
        insert(PrecisionStudy),
        [
            {"device_id": u.pk, "site": site, "performed_on": u.start, "rms_sd_g_cm2": lsc / 2.77, "lsc_g_cm2": lsc}
            for u in UNITS
            if u.serial
            for site, lsc in LSC.items()
        ],
    )
    conn.execute(
        insert(CrossCalibrationRow),
        [
            {
                "device_a_id": a,
                "device_b_id": b,
                "kind": kind,
                "sites": list(sites),
                "slope": slope,
                "lsc_g_cm2": lsc,
                "performed_on": UNITS[b - 1].start,
            }
            for a, b, kind, sites, lsc, slope in CROSSCALS
        ],
    )


def _stage_chunk(job: tuple[str, int, int]) -> dict[str, int]:
    """In a worker process: generate one chunk and write it (to the staging tables on PostgreSQL)."""
    url, first, last = job
    chunk = generate(first, last, SEED, _worker_config())
    engine = _worker_engine(url)
    counts = {}
    with engine.begin() as conn:
        for table in COLUMNS:
            rows = getattr(chunk, table)
            _copy(conn, table, rows)
            counts[table] = len(rows)
    return counts


@cache
def _worker_config() -> MonitoringConfig:
    _memoise_machine_identity()
    return load_monitoring_config(Settings())


@cache
def _worker_engine(url: str) -> Engine:
    return make_engine(url, pool_size=1)


def load(url: str, patients: int, jobs: int) -> dict[str, int]:
    """Generate and write `patients` patients, `CHUNK` at a time in `jobs` processes.

    On PostgreSQL the chunks go to unlogged staging tables and are then inserted into the real
    ones in the order a live database received them (by exam date, comparisons when the patient
    was last evaluated...): a patient's exams and measurements end up on pages years apart, as
    in a hospital's database, not side by side as a patient-by-patient load would put them.
    Then the planner's statistics and the id sequences are refreshed. Returns rows per table.
    """
    engine = make_engine(url)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        _reference_rows(conn)
        if postgres:
            for table in COLUMNS:
                conn.execute(
                    text(
                        f"CREATE UNLOGGED TABLE stage_{table} (LIKE {table} INCLUDING DEFAULTS, written date NOT NULL)"
                    )
                )
    engine.dispose()  # not inherited by the forked workers
    counts = dict.fromkeys(COLUMNS, 0)
    jobs_list = [(url, start, min(start + CHUNK - 1, patients)) for start in range(1, patients + 1, CHUNK)]
    with multiprocessing.get_context("fork").Pool(jobs if postgres else 1) as pool:
        for (_, _, last), written in zip(jobs_list, pool.imap(_stage_chunk, jobs_list), strict=True):
            for table, n in written.items():
                counts[table] += n
            print(f"  generated {last} patients", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if postgres:
            for table, columns in COLUMNS.items():
                listed = ", ".join(columns)
                order = f"written, {columns[0]}"
                conn.execute(
                    text(f"INSERT INTO {table} ({listed}) SELECT {listed} FROM stage_{table} ORDER BY {order}")
                )
                conn.execute(text(f"DROP TABLE stage_{table}"))
                if table != "next_scans":
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"))
            conn.execute(text("VACUUM ANALYZE"))
        else:
            conn.execute(text("ANALYZE"))
    engine.dispose()
    return counts


# --------------------------------------------------------------------------- timing


def timed(client: TestClient, paths: Iterator[str] | list[str]) -> list[float]:
    out = []
    for path in paths:
        t0 = time.perf_counter()
        response = client.get(path)
        out.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}")
    return out


# --------------------------------------------------------------------------- real HTTP

# The app as `dxa web` serves it (dxa.embedded.run_web: uvicorn, one process, keep-alive 75 s, no
# access log), built from the tree given as argv[1] (PYTHONPATH), over the bench's database, with
# the bench's fixed "today" so the pages are the TestClient's pages.
SERVER_CODE = """
import sys
from datetime import date
from pathlib import Path

import uvicorn

from dxa.embedded import WEB_KEEP_ALIVE_S
from services.context import build_context
from settings import Settings
from web.app import create_app

url, data_dir, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
ctx = build_context(Settings(data_dir=data_dir, database_url=url, secret_key="bench"))
app = create_app(ctx, today=lambda: date.fromisoformat(sys.argv[4]))
uvicorn.run(
    app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=WEB_KEEP_ALIVE_S
)
"""


class Server:
    """A web server process started from `tree` (this checkout, or another one to compare with),
    and one keep-alive HTTP/1.1 connection to it signed in as the bench user, as a browser holds.
    `cpu_ms()` is the server process's CPU time so far (user + system, from /proc)."""

    def __init__(self, label: str, tree: Path, url: str, data_dir: Path) -> None:
        import socket
        import subprocess

        self.label = label
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(tree)}
        # the tree's own environment when it has one: its server runs with the packages that tree
        # installs (an event loop or HTTP parser added since is then part of what is compared)
        python = tree / ".venv" / "bin" / "python"
        self.process = subprocess.Popen(
            [
                str(python) if python.exists() else sys.executable,
                "-c",
                SERVER_CODE,
                url,
                str(data_dir),
                str(self.port),
                TODAY.isoformat(),
            ],
            cwd=tree,
            env=env,
        )
        self.cookie = ""
        self._connect()
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.get("/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server from {tree} did not start")
            time.sleep(0.2)
            self._connect()
        login = self.get("/login")[1].decode()
        token = login.split('name="csrf_token" value="')[1].split('"')[0]
        form = urlencode({"username": "bench", "password": "bench-password", "csrf_token": token})
        status, _ = self.request("POST", "/login", form.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 303:
            raise SystemExit(f"server from {tree}: sign-in answered {status}")

    def _connect(self) -> None:
        import http.client

        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        import http.client

        sent = {**(headers or {}), **({"Cookie": self.cookie} if self.cookie else {})}
        try:
            self.connection.request(method, path, body=body, headers=sent)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if method != "GET":
                raise
            # the server closed the connection after it sat idle (keep-alive timeout, while the
            # other server was timed): open another and ask again, as a browser does
            self.connection.close()
            self._connect()
            self.connection.request(method, path, body=body, headers=sent)
            response = self.connection.getresponse()
        data = response.read()
        for value in response.headers.get_all("set-cookie") or ():
            if value.startswith("dxa_session="):
                self.cookie = value.split(";")[0]
        return response.status, data

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return self.request("GET", path, headers=headers)

    def timed_get(self, path: str) -> float:
        t0 = time.perf_counter()
        status, _ = self.get(path)
        ms = (time.perf_counter() - t0) * 1000
        if status != 200:
            raise SystemExit(f"{self.label}: {path}: HTTP {status}")
        return ms

    def cpu_ms(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.connection.close()
        self.process.terminate()
        self.process.wait(timeout=30)


class Floor:
    """FLOOR_SQL for one patient at a time on one psycopg connection (PostgreSQL only)."""

    def __init__(self, url: str) -> None:
        import psycopg

        from db.engine import normalise_url

        conninfo = normalise_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.connection = psycopg.connect(conninfo, autocommit=True)
        self.cursor = self.connection.cursor()

    def _read(self, bench_patient: BenchPatient) -> Any:
        """FLOOR_SQL for one patient; its primary key."""
        cur = self.cursor
        cur.execute(FLOOR_SQL[0], {"identifier": bench_patient.identifier, "issuer": bench_patient.issuer})
        row = cur.fetchone()
        if row is None:
            raise SystemExit(f"floor: patient {bench_patient.path} not found")
        for sql in FLOOR_SQL[1:]:
            cur.execute(sql, {"pk": row[0]})
            cur.fetchall()
        return row[0]

    def timed(self, bench_patient: BenchPatient) -> float:
        t0 = time.perf_counter()
        self._read(bench_patient)
        return (time.perf_counter() - t0) * 1000

    def timed_with_writes(self, bench_patient: BenchPatient) -> float:
        """FLOOR_SQL plus what a page must also do in SQL: its sign-in check (`FLOOR_SIGN_IN`, a
        session looked up by the hash of its secret) and its audit event, an INSERT committed
        (durably: the COMMIT waits for the disk)."""
        cur = self.cursor
        t0 = time.perf_counter()
        cur.execute(FLOOR_SIGN_IN, {"token_hash": "0" * 64})
        cur.fetchall()
        cur.execute(FLOOR_AUDIT, {"pk": self._read(bench_patient)})
        return (time.perf_counter() - t0) * 1000

    def close(self) -> None:
        self.connection.close()


CSRF_VALUE = re.compile(rb'name="csrf_token" value="[^"]*"')


def same_pages(servers: list[Server], paths: list[str]) -> None:
    """Whether the compared tree's server answers every path with the very same page as this
    tree's (each session's CSRF token masked), in English and in Chinese: a change made for speed
    must not change a byte of what is shown."""
    first, other = servers
    differ = []
    for language in ("en", "zh-CN,zh;q=0.9"):
        for path in paths:
            answers = [s.get(path, {"Accept-Language": language}) for s in (first, other)]
            bodies = [CSRF_VALUE.sub(b'name="csrf_token" value="-"', body) for _, body in answers]
            if answers[0][0] != answers[1][0] or bodies[0] != bodies[1]:
                differ.append((language, path))
    print(
        f"pages of {first.label} and {other.label}: {2 * len(paths) - len(differ)} of {2 * len(paths)} identical"
        f" ({len(paths)} paths, en and zh-CN, CSRF tokens masked)",
        flush=True,
    )
    for language, path in differ[:5]:
        print(f"  DIFFERENT: {path} ({language})")


def _page_getter(server: Server, page: Callable[[BenchPatient], str]) -> Callable[[BenchPatient], float]:
    return lambda p: server.timed_get(page(p))


def side_by_side(items: list[T], ways: dict[str, Callable[[T], float]]) -> dict[str, list[float]]:
    """Each patient read every way, the order turned by one each patient: no way always reads a
    patient first (from disk) or always second (from cache), and a disturbance on the shared
    machine falls on all of them alike."""
    names = list(ways)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i, item in enumerate(items):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(ways[name](item))
    return out


def report(name: str, ms: list[float], target: float | None) -> None:
    ordered = sorted(ms)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    verdict = "" if target is None else (" ok" if p95 < target else f" OVER the {target:.0f} ms target")
    print(f"{name:<34} n={len(ms):<4} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms{verdict}", flush=True)


# The SQL the patient page needs, written by hand: the floor a page cannot beat for the same data
# (the patient, exams with their machine and measurements, comparisons with their notes,
# therapies, next scan and the open and acknowledged alerts: every column the page shows), run
# through the driver's cursor with no ORM, no template and no HTTP. Neither the sign-in check nor
# the audit event (the page's other two statements, with its COMMIT) is in it.
FLOOR_SQL = (
    "SELECT id, identifier, issuer, name, birth_date, sex FROM patients WHERE identifier = %(identifier)s"
    " AND issuer = %(issuer)s",
    "SELECT e.id, e.exam_date, e.software_version, e.source, d.id, d.manufacturer, d.model, d.serial, m.site,"
    " m.side, m.bmd, m.t_score, m.z_score, m.provenance FROM exams e JOIN devices d ON d.id = e.device_id"
    " LEFT JOIN measurements m ON m.exam_id = e.id WHERE e.patient_id = %(pk)s"
    " ORDER BY e.exam_date, e.id, m.site, m.side",
    "SELECT site, side, from_exam_id, to_exam_id, reference, status, delta_g_cm2, percent_change, lsc_g_cm2,"
    " lsc_source, significance, dissimilar, reason, notes FROM comparisons WHERE patient_id = %(pk)s"
    " ORDER BY position",
    "SELECT id, agent, drug_class, start_date, stop_date, glucocorticoid FROM therapies WHERE patient_id = %(pk)s"
    " ORDER BY start_date",
    "SELECT due, rule_id, reason, alerts, who_category, z_below_expected FROM next_scans WHERE patient_id = %(pk)s",
    "SELECT id, code, message, state, raised_at, acknowledged_at, acknowledged_by, ack_comment, phrase FROM alerts"
    " WHERE patient_id = %(pk)s AND state IN ('open', 'acknowledged') ORDER BY id",
)


FLOOR_SIGN_IN = (
    "SELECT s.revoked_at, s.last_seen_at, s.created_at, u.id, u.username, u.role, u.locale, u.active"
    " FROM web_sessions s LEFT JOIN users u ON u.id = s.user_id WHERE s.token_hash = %(token_hash)s"
)
FLOOR_AUDIT = (
    "INSERT INTO audit_events (occurred_at, actor, user_id, action, patient_id, detail)"
    " VALUES (now(), 'bench-floor', NULL, 'bench_floor', %(pk)s, '{}')"
)


def _p(ms: list[float], q: float) -> float:
    ordered = sorted(ms)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _sample_patients(url: str, count: int, rng: random.Random) -> list[BenchPatient]:
    engine = make_engine(url)
    with engine.connect() as conn:
        total = conn.execute(text("SELECT max(id) FROM patients")).scalar_one()
        picked = sorted(rng.sample(range(1, total + 1), min(count, total)))
        rows = conn.execute(
            text("SELECT id, identifier, issuer FROM patients WHERE id IN ({})".format(",".join(map(str, picked))))
        ).all()
    engine.dispose()
    by_id = {pk: BenchPatient(identifier, issuer) for pk, identifier, issuer in rows}
    return [by_id[pk] for pk in picked if pk in by_id]


def _profile(server: Server, paths: list[str], out: Path) -> None:
    """Where the patient page's CPU goes in the server as it is really served: py-spy samples the
    server process (every thread: uvicorn's event loop and the worker threads of the routes)
    while it holds the GIL, so a sample is Python at work, not waiting for the database or the
    network. Writes py-spy's collapsed stacks to `out` and prints each thread's share and the
    functions that take the largest share of all samples (inclusive)."""
    import signal
    import subprocess

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "--pid", str(server.process.pid), "--rate", "1000", "--gil", "--threads"]
    recorder = subprocess.Popen(
        [*command, "--format", "raw", "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    time.sleep(1.5)  # py-spy attaches
    cpu = server.cpu_ms()
    ms = [server.timed_get(path) for path in paths]
    cpu = (server.cpu_ms() - cpu) / len(paths)
    recorder.send_signal(signal.SIGINT)
    recorder.wait(timeout=60)
    print(
        f"profile of {len(paths)} patient pages over HTTP (p50 {statistics.median(ms):.1f} ms, server CPU"
        f" {cpu:.1f} ms a page, both inflated by the sampling) in {out}:"
    )
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        thread = "event loop" if "MainThread" in frames[0] else "worker threads"
        threads[thread] = threads.get(thread, 0) + int(count)
        for name in {f.split(" (")[0] + " " + f.split(" (")[-1].split(":")[0] for f in frames[1:]}:
            inclusive[name] = inclusive.get(name, 0) + int(count)
    print("  " + ", ".join(f"{name} {100 * n / max(total, 1):.0f} %" for name, n in sorted(threads.items())))
    for name, samples in sorted(inclusive.items(), key=lambda kv: -kv[1])[:60]:
        print(f"  {100 * samples / max(total, 1):5.1f} %  {name}")


def run_requests(
    url: str,
    tmp: Path,
    n: int,
    rounds: int,
    profile: Path | None = None,
    page_only: bool = False,
    compare: Path | None = None,
) -> None:
    factory = session_factory(make_engine(url))
    with factory() as session:
        if accounts.verify_user(session, "bench", "bench-password") is None:
            accounts.create_user(session, "bench", "bench-password", "clinician")
            session.commit()
    ctx = build_context(Settings(data_dir=tmp, database_url=url, secret_key="bench"))
    app = create_app(ctx, today=lambda: TODAY)
    statements = [0]
    # on the Engine class: the app reads through an engine of its own beside the use cases' one
    event.listen(Engine, "before_cursor_execute", lambda *_a, **_k: statements.__setitem__(0, statements[0] + 1))
    rng = random.Random(2)
    sample = _sample_patients(url, 2000, rng)
    names = [f.lower()[:4] for f in FAMILY]
    postgres = url.startswith("postgresql")
    servers = [Server("HTTP", Path(__file__).resolve().parents[1], url, tmp / "server")]
    if compare is not None:
        servers.append(Server(f"HTTP {compare.name}", compare.resolve(), url, tmp / "compare"))
    floor = Floor(url) if postgres else None
    try:
        with TestClient(app) as client:
            login = client.get("/login").text
            token = login.split('name="csrf_token" value="')[1].split('"')[0]
            client.post("/login", data={"username": "bench", "password": "bench-password", "csrf_token": token})

            def patients(k: int) -> list[BenchPatient]:
                return [rng.choice(sample) for _ in range(k)]

            def page(p: BenchPatient) -> str:
                return f"/patients/{p.path}{p.query}"

            for p in patients(10):  # warm-up: each process's first pages build its caches
                timed(client, [page(p)])
                for server in servers:
                    server.timed_get(page(p))
            timed(client, ["/patients", "/patients?q=123"])
            if compare is not None:
                same_pages(servers, [page(p) for p in sample[:300]] + ["/patients", "/patients?q=mart", "/worklist"])
            if profile is not None:
                _profile(servers[0], [page(p) for p in patients(n)], profile)
            cpu = {"TestClient": 0.0}
            statement_count = [0]

            def in_process(p: BenchPatient) -> float:
                before, started = statements[0], time.process_time()
                ms = timed(client, [page(p)])[0]
                cpu["TestClient"] += (time.process_time() - started) * 1000
                statement_count[0] += statements[0] - before
                return ms

            ways: dict[str, Callable[[BenchPatient], float]] = {"TestClient": in_process}
            for server in servers:
                ways[server.label] = _page_getter(server, page)
            if floor is not None:
                ways["SQL floor"] = floor.timed
                ways["SQL floor + sign-in + audit"] = floor.timed_with_writes
            for r in range(rounds):
                if rounds > 1:
                    print(f"round {r + 1}/{rounds}")
                picked = patients(n)
                for server in servers:
                    server.get("/healthz")  # not timed: a connection the server closed while idle is replaced
                load_before = os.getloadavg()[0]
                cpu["TestClient"], statement_count[0] = 0.0, 0
                server_cpu = {s.label: s.cpu_ms() for s in servers}
                found = side_by_side(picked, ways)
                for server in servers:
                    cpu[server.label] = server.cpu_ms() - server_cpu[server.label]
                print(f"  patient page, {n} patients each way, loadavg {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
                for name, ms in found.items():
                    if name.startswith("SQL floor"):
                        report(f"  {name}", ms, None)
                        continue
                    report(f"  {name}", ms, 50)
                    where = "the app and the test client" if name == "TestClient" else "the server process"
                    print(f"      CPU per page {cpu[name] / len(picked):.1f} ms ({where})", flush=True)
                if floor is not None:
                    base, writes = found["SQL floor"], found["SQL floor + sign-in + audit"]
                    for name, ms in found.items():
                        if not name.startswith("SQL floor"):
                            ratios = f"p50 {_p(ms, 0.5) / _p(base, 0.5):.1f}x, p95 {_p(ms, 0.95) / _p(base, 0.95):.1f}x"
                            also = f"p50 {_p(ms, 0.5) / _p(writes, 0.5):.1f}x"
                            print(f"  {name} / floor: {ratios} (target ≤3x); / floor with its writes: {also}")
                    per_page = statement_count[0] / len(picked)
                    print(f"  {per_page:.1f} SQL statements per page (floor: {len(FLOOR_SQL)})", flush=True)
                if page_only:
                    continue
                trend = [f"/api/patients/{p.path}/trend{p.query}" for p in patients(n)]
                report("trend API", timed(client, trend), None)
                lists: list[tuple[str, Callable[[], str]]] = [
                    ("patients list", lambda: f"/patients?page={rng.randint(1, 50)}"),
                    ("patients list, deep pages", lambda: f"/patients?page={rng.randint(51, 2000)}"),
                    ("patients list ?overdue", lambda: f"/patients?overdue=true&page={rng.randint(1, 20)}"),
                    ("patients list ?alerts", lambda: f"/patients?alerts=true&page={rng.randint(1, 5)}"),
                    ("patients list ?overdue&alerts", lambda: "/patients?overdue=true&alerts=true"),
                    ("patients list ?q=<3 digits>", lambda: f"/patients?q={rng.randint(100, 999)}"),
                    ("patients list ?q=<MRN prefix>", lambda: f"/patients?q={rng.choice(sample).identifier[:5]}"),
                    ("patients list ?q=<name part>", lambda: f"/patients?q={quote(rng.choice(names))}"),
                ]
                for name, make_path in lists:
                    paths = [make_path() for _ in range(n)]
                    # the same paths through the test client and over HTTP (each server), alternated
                    list_ways: dict[str, Callable[[str], float]] = {"TestClient": lambda path: timed(client, [path])[0]}
                    list_ways.update({server.label: server.timed_get for server in servers})
                    for way, ms in side_by_side(paths, list_ways).items():
                        report(f"{name} ({way})", ms, 150)
    finally:
        for server in servers:
            server.stop()
        if floor is not None:
            floor.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", help="an empty PostgreSQL database")
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="requests per line")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the timed lines (to see the spread)")
    parser.add_argument("--jobs", type=int, default=2, help="processes generating the data")
    parser.add_argument("--skip-load", action="store_true", help="time an already loaded database again")
    parser.add_argument(
        "--profile", type=Path, help="profile --requests patient pages first (py-spy), collapsed stacks to this file"
    )
    parser.add_argument("--page-only", action="store_true", help="time the patient page and its floor, no lists")
    parser.add_argument(
        "--compare",
        type=Path,
        help="another checkout (e.g. of main before a change): its server is timed beside this one's",
    )
    args = parser.parse_args(argv)
    if args.skip_load and not args.database_url:
        parser.error("--skip-load needs --database-url (a SQLite bench file is temporary)")
    with tempfile.TemporaryDirectory(prefix="dxa-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}" if args.sqlite or not args.database_url else args.database_url
        upgrade(url)  # with --skip-load: indexes of migrations newer than the load
        if not args.skip_load:
            t0 = time.perf_counter()
            counts = load(url, args.patients, args.jobs)
            print(f"load: {time.perf_counter() - t0:.1f} s; rows: {counts}", flush=True)
        run_requests(url, Path(tmp), args.requests, args.rounds, args.profile, args.page_only, args.compare)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: bench process (app and requests) {peak:.0f} MiB, largest load worker {workers:.0f} MiB")


if __name__ == "__main__":
    main()
