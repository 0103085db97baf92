"""A small migrated SQLite database with users, patients, a refused cross-machine comparison, a
quarantined file and a precision study, shared by the API tests and the browser tests.

Exams go in through the db repositories (`store_report`, what the ingest use case stores a parsed
file with), the precision study through `dxa precision import`'s use case, and patients are
evaluated by the production use case (`services.evaluation.evaluate`, with the birth date, the
precision studies and the patient lock), on the seed's fixed `TODAY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

import services.evaluation
import services.runner
from db import accounts, files
from db.migrate import upgrade
from db.models import Device, Patient, SourceFile
from db.reports import store_report
from ingest.report import DeviceIdentity, ParsedReport, PatientInfo, SiteMeasurement
from services.audit import Actor
from services.context import Context, build_context
from services.precision import save_precision
from settings import Settings

TODAY = date(2019, 6, 1)
PASSWORDS = {"clin": "clin-pass-1", "qa": "qa-pass-1", "admin": "admin-pass-1"}
ROLES = {"clin": "clinician", "qa": "qa", "admin": "admin"}
REPLACED = "9891027"  # Discovery SL replaced by a Horizon W: refused comparisons
SAME = "4555466"  # one machine throughout: a significant loss
FORMULA_ID = "=cmd|' -C calc'!A0"  # a CSV export must not turn this into a formula

OLD = DeviceIdentity("HOLOGIC", "Discovery SL", "45678", "13.3")
NEW = DeviceIdentity("HOLOGIC", "Horizon W", "200457", "13.6")
NO_SERIAL = DeviceIdentity("GE Healthcare", "Lunar Prodigy", None, "16")


def _precision_csv() -> str:
    """The Horizon W's L1-L4 study, 2 technologists x 15 patients x 3 scans, in `dxa precision
    import`'s layout: facility RMS-SD 0.0100 g/cm² (LSC 0.0277); alice within the ISCD limit for
    the spine (1.9 %CV), bob over it (2.5 %)."""
    spread = {"alice": (0.00015 - 0.0105**2) ** 0.5, "bob": 0.0105}
    rows = ["device_serial,site,technologist,patient,bmd_1,bmd_2,bmd_3"]
    for tech, d in spread.items():
        for i in range(15):
            scans = ",".join(f"{0.45 + i * 0.005 + d * (-1) ** k:.12f}" for k in range(3))
            rows.append(f"{NEW.serial},L1-L4,{tech},s{i},{scans}")
    return "\n".join(rows)


PRECISION_CSV = _precision_csv()


def evaluate(ctx: Context, patient_pk: int) -> None:
    """The production evaluation, on the seed's calendar."""
    services.evaluation.evaluate(ctx, patient_pk, TODAY)


def _report(
    pid: str,
    name: str,
    day: date,
    device: DeviceIdentity,
    values: dict[tuple[str, str | None], tuple[float, float]],
) -> ParsedReport:
    return ParsedReport(
        format="test",
        patient=PatientInfo(patient_id=pid, name=name, birth_date=date(1950, 3, 4), sex="F"),
        exam_date=day,
        device=device,
        scan_type="mixed",
        measurements=tuple(SiteMeasurement(site, side, bmd, t_score=t) for (site, side), (bmd, t) in values.items()),
    )


@dataclass
class Seeded:
    ctx: Context
    settings: Settings
    factory: sessionmaker[Session]
    token: str  # a clinician's API token
    qa_token: str
    patients: dict[str, int]
    quarantined_file: int
    device_ids: dict[str, int]


def build(tmp: Path, url: str | None = None) -> Seeded:
    url = url or f"sqlite:///{tmp / 'web.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp, database_url=url, secret_key="test-secret-key-not-for-production")
    ctx = build_context(settings)
    factory = ctx.sessions
    with factory() as session:
        users = {name: accounts.create_user(session, name, PASSWORDS[name], ROLES[name]) for name in PASSWORDS}  # type: ignore[arg-type]
        _, token = accounts.create_api_token(session, users["clin"], "tests")
        _, qa_token = accounts.create_api_token(session, users["qa"], "tests")
        reports = [
            _report(
                REPLACED,
                "Replaced^Machine",
                date(2012, 9, 10),
                OLD,
                {
                    ("L1-L4", None): (0.782, -2.4),
                    ("total_hip", "right"): (0.760, -1.5),
                    ("femoral_neck", "right"): (0.641, -1.8),
                },
            ),
            _report(
                REPLACED,
                "Replaced^Machine",
                date(2014, 9, 22),
                OLD,
                {
                    ("L1-L4", None): (0.808, -2.2),
                    ("total_hip", "right"): (0.766, -1.4),
                    ("femoral_neck", "right"): (0.647, -1.8),
                },
            ),
            _report(
                REPLACED,
                "Replaced^Machine",
                date(2016, 10, 3),
                NEW,
                {
                    ("L1-L4", None): (0.815, -2.1),
                    ("total_hip", "right"): (0.769, -1.4),
                    ("femoral_neck", "right"): (0.649, -1.7),
                },
            ),
            _report(
                REPLACED,
                "Replaced^Machine",
                date(2018, 10, 15),
                NEW,
                {
                    ("L1-L4", None): (0.821, -2.1),
                    ("total_hip", "right"): (0.771, -1.4),
                    ("femoral_neck", "right"): (0.652, -1.7),
                },
            ),
            _report(
                SAME,
                "Same^Machine",
                date(2015, 3, 2),
                NEW,
                {("L1-L4", None): (0.900, -1.6), ("total_hip", "left"): (0.800, -1.3)},
            ),
            _report(
                SAME,
                "Same^Machine",
                date(2017, 3, 6),
                NEW,
                {("L1-L4", None): (0.850, -2.0), ("total_hip", "left"): (0.760, -1.6)},
            ),
            _report(
                FORMULA_ID,
                "Formula^Injection",
                date(2016, 1, 5),
                NO_SERIAL,
                {("L1-L4", None): (1.01, -0.5)},
            ),
        ]
        for report in reports:
            store_report(session, report)
        reg = files.register_source_file(session, sha256="ab" * 32, original_name="broken.dcm", size_bytes=12)
        files.mark_quarantined(
            session, reg.file, reason_code="truncated_dicom", reason_text="The DICOM file ends early."
        )
        ok = files.register_source_file(session, sha256="cd" * 32, original_name="fine.dcm", size_bytes=99)
        ok.file.status = "ingested"
        session.commit()
        patients = {p.identifier: p.id for p in session.query(Patient)}
        quarantined = session.query(SourceFile).filter_by(original_name="broken.dcm").one().id
        device_ids = {d.serial or "none": d.id for d in session.query(Device)}
    save_precision(ctx, Actor("seed"), PRECISION_CSV, "seed", performed_on=date(2016, 1, 1))
    while services.runner.run_next(ctx) is not None:  # the re-evaluations the study queued
        pass
    for pk in patients.values():
        evaluate(ctx, pk)
    return Seeded(ctx, settings, factory, token, qa_token, patients, quarantined, device_ids)
