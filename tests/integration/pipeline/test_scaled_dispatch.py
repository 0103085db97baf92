"""The scaled mode as docker-compose runs it: `dxa web` and a Celery worker on Redis and
PostgreSQL. Work queued from a page reaches a worker at once (the web app is wired with the
Celery dispatcher by `dxa.wiring`), not after the sweeper's 20-40 s: a cross-calibration saved
through the web API gets the patient scanned on both machines re-evaluated within 5 seconds.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

import services.evaluation
from db import accounts, calibration
from db.devices import find_or_create_device
from db.migrate import upgrade
from db.models import ComparisonRow, Device, Patient
from db.reports import store_report
from ingest.report import DeviceIdentity, ParsedReport, PatientInfo, SiteMeasurement
from services.context import Context, build_context
from settings import Settings
from tests.integration.pipeline.support import celery_worker, dxa, free_port, service_env, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

UNIT_A = DeviceIdentity("HOLOGIC", "Horizon W", "200457", "13.6")
UNIT_B = DeviceIdentity("HOLOGIC", "Horizon W", "300812", "13.6")  # a second unit of the same model


def _report(day: date, device: DeviceIdentity, bmd: float) -> ParsedReport:
    return ParsedReport(
        format="test",
        patient=PatientInfo(patient_id="SCALED-1", name="Scaled^Mode", birth_date=date(1950, 3, 4), sex="F"),
        exam_date=day,
        device=device,
        scan_type="spine",
        measurements=(SiteMeasurement("L1-L4", None, bmd, t_score=-2.0),),
    )


def _seed(ctx: Context) -> tuple[int, str]:
    """A patient scanned on unit A, then on unit B (a refused comparison), both units with an
    L1-L4 precision study, and a QA user's API token."""
    with ctx.sessions.begin() as session:
        for day, unit, bmd in ((date(2016, 5, 2), UNIT_A, 0.900), (date(2018, 5, 7), UNIT_B, 0.850)):
            store_report(session, _report(day, unit, bmd))
        for unit in (UNIT_A, UNIT_B):
            device = find_or_create_device(session, unit)
            calibration.save_precision_study(session, device, "L1-L4", [], rms_sd_g_cm2=0.01, lsc_g_cm2=0.0277)
        qa = accounts.create_user(session, "qa", "qa-password-1", "qa")
        _, token = accounts.create_api_token(session, qa, "scaled test")
        patient = session.scalars(select(Patient.id).where(Patient.identifier == "SCALED-1")).one()
    services.evaluation.evaluate(ctx, patient)
    return patient, token


def _statuses(ctx: Context, patient: int) -> set[str]:
    with ctx.sessions() as session:
        return set(session.scalars(select(ComparisonRow.status).where(ComparisonRow.patient_id == patient)))


def test_a_cross_calibration_saved_on_the_web_reevaluates_the_patient_at_once(
    tmp_path: Path, logs: Path, redis_db: str, pg_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=redis_db)
    ctx = build_context(settings)  # the test's own view of the database
    upgrade(ctx.engine)
    patient, token = _seed(ctx)
    assert _statuses(ctx, patient) == {"rejected_cross_machine"}

    port = free_port()
    env = service_env(
        DXA_BROKER_URL=redis_db,
        DXA_DATABASE_URL=pg_url,
        DXA_DATA_DIR=str(tmp_path / "data"),
        DXA_HOST="127.0.0.1",
        DXA_PORT=str(port),
        DXA_SECRET_KEY="scaled-test-secret",
    )
    worker = celery_worker(env, logs / "worker.log", concurrency=1).start()
    web = dxa(["web"], env, logs / "web.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        worker.wait_log("ready.", 60)

        def web_up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(web_up, 60, "dxa web to answer")
        with ctx.sessions() as session:
            serials = [d.serial for d in session.scalars(select(Device).order_by(Device.id))]
        rows = ["kind,device_a_serial,device_b_serial,site,subject,bmd_a,bmd_b"]
        rows += [  # ten phantom scans on each unit, means 0.2 % apart: accepted
            f"phantom,{serials[0]},{serials[1]},L1-L4,{i},{1.000 + 0.001 * (i % 3):.3f},{1.002 + 0.001 * (i % 3):.3f}"
            for i in range(10)
        ]
        saved = httpx.post(
            f"{base}/api/qa/crosscal",
            json={"csv_text": "\n".join(rows)},
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert saved.status_code == 201, saved.text
        assert saved.json()["patients_queued"] == 1
        started = time.monotonic()
        wait_until(lambda: "ok_cross_calibrated" in _statuses(ctx, patient), 5, "the patient's re-evaluation")
        assert "rejected_cross_machine" not in _statuses(ctx, patient)
        assert time.monotonic() - started < 5
    finally:
        web.stop()
        worker.stop()
        ctx.engine.dispose()
