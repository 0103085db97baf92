"""The cross-calibration calculator on the QA machines page and its JSON API: preview computes
and saves nothing, save stores exactly what was previewed, unusable studies are refused.

The expected figures are computed here from the formulas (least squares, SEE, Shepherd & Lu's
generalized LSC as ISCD uses it), not by calling `monitor.crosscal`."""

from __future__ import annotations

import html
import math
import re
import statistics
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from db import calibration
from db.devices import find_or_create_device
from db.models import AuditEvent, CrossCalibrationRow, Job
from ingest.report import DeviceIdentity
from tests.web.conftest import csrf_of
from tests.web.seed import REPLACED, Seeded

Login = Callable[[str], TestClient]
HEADER = "kind,device_a_serial,device_b_serial,site,subject,bmd_a,bmd_b"
OLD, NEW, TWIN = "45678", "200457", "200999"  # Discovery SL -> Horizon W; TWIN: a second Horizon W
SAVE_BUTTON = 'value="save">Save cross-calibration</button>'
RMS = {OLD: 0.008, NEW: 0.01, TWIN: 0.012}  # NEW's L1-L4 study comes with the seed


@pytest.fixture(scope="module")
def studies(seeded: Seeded) -> Seeded:
    """A second Horizon W, and L1-L4 precision studies for it and for the old Discovery SL."""
    with seeded.factory() as session:
        twin = find_or_create_device(session, DeviceIdentity("HOLOGIC", "Horizon W", TWIN, "13.6"))
        old = find_or_create_device(session, DeviceIdentity("HOLOGIC", "Discovery SL", OLD, "13.3"))
        for device in (twin, old):
            assert device.serial is not None
            calibration.save_precision_study(
                session, device, "L1-L4", [], rms_sd_g_cm2=RMS[device.serial], lsc_g_cm2=2.77 * RMS[device.serial]
            )
        session.commit()
        seeded.device_ids[TWIN] = twin.id
    return seeded


def _in_vivo_rows(site: str = "L1-L4", n: int = 30) -> list[tuple[float, float]]:
    return [(round(0.70 + 0.01 * i, 4), round(1.04 * (0.70 + 0.01 * i) + 0.03 + 0.02 * (-1) ** i, 4)) for i in range(n)]


def _csv(kind: str, a: str, b: str, site: str, pairs: list[tuple[float, float]]) -> str:
    return "\n".join([HEADER, *(f"{kind},{a},{b},{site},S{i},{x:.4f},{y:.4f}" for i, (x, y) in enumerate(pairs))])


def _expected_glsc(pairs: list[tuple[float, float]], rms_old: float, rms_new: float) -> tuple[float, float, float]:
    """(slope, intercept, GLSC): GLSC = 1.96·sqrt(σn² + (b·σo)² + σcal²), σcal² = max(0, SEE² − σn² − (b·σo)²)
    with one scan per patient on each machine."""
    old = [p[0] for p in pairs]
    new = [p[1] for p in pairs]
    slope, intercept = statistics.linear_regression(old, new)
    see2 = sum((y - (slope * x + intercept)) ** 2 for x, y in pairs) / (len(pairs) - 2)
    precision = rms_new**2 + (slope * rms_old) ** 2
    return slope, intercept, 1.96 * math.sqrt(precision + max(0.0, see2 - precision))


def _post(client: TestClient, csv_text: str, **form: str) -> httpx.Response:
    token = csrf_of(client.get("/qa/devices").text)
    files = {"file": ("crosscal.csv", csv_text.encode(), "text/csv")}
    response: httpx.Response = client.post("/qa/devices/crosscal", data={"csrf_token": token, **form}, files=files)
    return response


def _count(seeded: Seeded, model: type[CrossCalibrationRow] | type[AuditEvent], action: str | None = None) -> int:
    stmt = select(func.count()).select_from(model)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    with seeded.factory() as session:
        return session.scalar(stmt) or 0


def test_in_vivo_preview_shows_generalized_lsc_then_save_stores_it(login: Login, studies: Seeded) -> None:
    client = login("qa")
    pairs = _in_vivo_rows()
    slope, intercept, glsc = _expected_glsc(pairs, RMS[OLD], RMS[NEW])
    percent = 100 * glsc / statistics.fmean(p[1] for p in pairs)
    before = _count(studies, CrossCalibrationRow)

    preview = _post(client, _csv("in_vivo", OLD, NEW, "L1-L4", pairs))
    assert preview.status_code == 200, preview.text
    page = preview.text
    shown = re.search(r'class="glsc">([^<]+)<', page)
    assert shown, page
    assert shown.group(1) == f"{glsc:.3f} g/cm² ({percent:.1f} % of the mean new-machine BMD)"
    assert f"new = {slope:.4f} × old" in page and f"{abs(intercept):.4f}" in page
    assert "30 patients: ISCD recommends 100" in page
    assert SAVE_BUTTON in page
    assert _count(studies, CrossCalibrationRow) == before  # a preview saves nothing

    # "Save" posts back the CSV the preview page carries, so what is stored is what was seen
    hidden = re.search(r'name="csv_text" value="([^"]*)"', page)
    assert hidden
    token = csrf_of(page)
    audits = _count(studies, AuditEvent, "cross_calibration_saved")
    saved = client.post(
        "/qa/devices/crosscal", data={"csrf_token": token, "action": "save", "csv_text": html.unescape(hidden.group(1))}
    )
    assert saved.status_code == 303 and saved.headers["location"].startswith("/qa/devices")
    assert _count(studies, CrossCalibrationRow) == before + 1
    assert _count(studies, AuditEvent, "cross_calibration_saved") == audits + 1
    with studies.factory() as session:
        # the patient scanned on both machines is queued for re-evaluation
        job = session.scalar(
            select(Job)
            .where(Job.kind == "evaluate_patient", Job.patient_id == studies.patients[REPLACED])
            .order_by(Job.id.desc())
            .limit(1)
        )
        assert job is not None and job.state == "queued"

    devices = {d["serial"]: d for d in client.get("/api/qa/devices").json()["devices"]}
    new_side = devices[NEW]["cross_calibrations"]
    assert len(new_side) == 1 and new_side[0]["kind"] == "in_vivo" and new_side[0]["role"] == "new"
    assert new_side[0]["lsc_g_cm2"]["L1-L4"] == pytest.approx(glsc, abs=1e-9)
    assert new_side[0]["slope"] == pytest.approx(slope) and new_side[0]["intercept"] == pytest.approx(intercept)
    assert devices[OLD]["cross_calibrations"][0]["role"] == "old"
    card = client.get("/qa/devices").text
    old_card = card[card.index('id="device-' + str(studies.device_ids[OLD])) :]
    old_card = old_card[: old_card.index("</section>")]
    assert "Cross-calibrations" in old_card and "converted to HOLOGIC Horizon W (S/N 200457)" in old_card
    assert f"{glsc:.3f}" in old_card and f"{slope:.4f}" in old_card


def test_api_preview_and_save_of_an_accepted_phantom(studies: Seeded, anon: TestClient) -> None:
    bearer = {"authorization": f"Bearer {studies.qa_token}"}
    pairs = [(1.000 + 0.001 * (i % 3), 1.003 + 0.001 * (i % 3)) for i in range(10)]  # +0.3 %
    body = {"csv_text": _csv("", NEW, TWIN, "L1-L4", pairs), "kind": "phantom", "performed_on": "2019-05-02"}
    before = _count(studies, CrossCalibrationRow)
    preview = anon.post("/api/qa/crosscal/preview", json=body, headers=bearer)
    assert preview.status_code == 200, preview.text
    (result,) = preview.json()["cross_calibrations"]
    pooled = 2.77 * math.sqrt((RMS[NEW] ** 2 + RMS[TWIN] ** 2) / 2)
    assert result["phantom"]["accepted"] is True
    mean_a, mean_b = statistics.fmean(p[0] for p in pairs), statistics.fmean(p[1] for p in pairs)
    assert result["phantom"]["difference_percent"] == pytest.approx(100 * (mean_b - mean_a) / mean_a, abs=1e-9)
    assert result["lsc_g_cm2"] == pytest.approx(pooled, abs=1e-9)
    assert _count(studies, CrossCalibrationRow) == before
    saved = anon.post("/api/qa/crosscal", json=body, headers=bearer)
    assert saved.status_code == 201, saved.text
    assert _count(studies, CrossCalibrationRow) == before + 1
    devices = {d["serial"]: d for d in anon.get("/api/qa/devices", headers=bearer).json()["devices"]}
    (twin,) = devices[TWIN]["cross_calibrations"]
    assert twin["kind"] == "phantom" and twin["performed_on"] == "2019-05-02" and twin["slope"] is None
    assert twin["lsc_g_cm2"]["L1-L4"] == pytest.approx(pooled, abs=1e-9)


def test_phantom_outside_tolerance_is_shown_and_not_saveable(login: Login, studies: Seeded) -> None:
    client = login("qa")
    pairs = [(1.000, 1.020) for _ in range(10)]  # +2 %, beyond the 1 % tolerance
    text = _csv("phantom", NEW, TWIN, "L1-L4", pairs)
    before = _count(studies, CrossCalibrationRow)
    preview = _post(client, text)
    assert preview.status_code == 422
    page = preview.text
    assert "+2.00 % (tolerance 1.0 %)" in page and "not accepted" in page and "cannot be saved" in page
    assert SAVE_BUTTON not in page
    forced = client.post("/qa/devices/crosscal", data={"csrf_token": csrf_of(page), "action": "save", "csv_text": text})
    assert forced.status_code == 422
    assert _count(studies, CrossCalibrationRow) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_csv("in_vivo", OLD, NEW, "total_hip", _in_vivo_rows()), "no precision study at total_hip"),
        (_csv("in_vivo", OLD, "NOPE9", "L1-L4", _in_vivo_rows()), "line 2: field device_b_serial"),
        (_csv("in_vivo", OLD, NEW, "L1-L4", _in_vivo_rows(n=5)), "5 patients; at least 30"),
        (_csv("phantom", NEW, TWIN, "L1-L4", [(1.0, 1.0)] * 4), "4 phantom scans; at least 10"),
    ],
)
def test_unusable_studies_are_refused(login: Login, studies: Seeded, text: str, message: str) -> None:
    client = login("qa")
    before = _count(studies, CrossCalibrationRow)
    response = client.post(
        "/qa/devices/crosscal",
        data={"csrf_token": csrf_of(client.get("/qa/devices").text), "action": "save", "csv_text": text},
    )
    assert response.status_code == 422
    assert message in html.unescape(response.text)
    assert _count(studies, CrossCalibrationRow) == before


def test_clinicians_csrf_and_size_limits(login: Login, studies: Seeded) -> None:
    text = _csv("in_vivo", OLD, NEW, "L1-L4", _in_vivo_rows())
    clin = login("clin")
    assert clin.post("/qa/devices/crosscal", data={"csv_text": text}).status_code == 403
    assert clin.post("/api/qa/crosscal/preview", json={"csv_text": text}).status_code == 403
    qa = login("qa")
    assert qa.post("/api/qa/crosscal/preview", json={"csv_text": text}).status_code == 403  # no X-CSRF-Token
    token = csrf_of(qa.get("/qa/devices").text)
    ok = qa.post("/api/qa/crosscal/preview", json={"csv_text": text}, headers={"x-csrf-token": token})
    assert ok.status_code == 200 and ok.json()["cross_calibrations"][0]["in_vivo"]["patients"] == 30
    big = (HEADER + "\n" + "x" * (2 * 1024 * 1024)).encode()
    files = {"file": ("big.csv", big, "text/csv")}
    assert qa.post("/qa/devices/crosscal", data={"csrf_token": token}, files=files).status_code == 413
