"""Issue 14 end to end: a faxed TIFF and a phone photo of a patient's Chinese PRIMUS reports are
dropped into the inbox beside the text PDF of a later exam, read by OCR (really running), held
(not trended, compared or exported), shown on the verification page beside the image each value
was read from, confirmed by a QA user (with a correction, audited before and after), and the
patient's trend gains those exams with `source: ocr`; a rejected scan goes to quarantine with the
reason; a scan without a readable patient ID cannot be attached to anyone."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from sqlalchemy import select

import services.runner
from db import accounts
from db.migrate import upgrade
from db.models import AuditEvent, Exam, Patient, ScanRow, SourceFile
from services.context import Context, build_context
from services.exports import export_all
from services.intake import intake
from settings import Settings
from tests import scans as S
from tests.web.conftest import csrf_of
from web.app import create_app

TODAY = date(2021, 1, 4)
PATIENT = S.SAMPLES / "patients" / "98514022_primus_followup_zh"
FAXED = PATIENT / "20160309_骨密度报告.pdf"
PHOTOGRAPHED = PATIENT / "20180314_骨密度报告.pdf"
TEXT_PDF = PATIENT / "20200318_骨密度报告.pdf"
HOLOGIC = S.SAMPLES / "single" / "pdf" / "hologic_spine_report.pdf"

if shutil.which("tesseract") is None or not PATIENT.is_dir():
    if os.environ.get("DXA_REQUIRE_SERVICES") == "1":
        raise RuntimeError("tesseract (make system-deps) and ../shared/samples are required for the OCR tests")
    pytest.skip("tesseract or the shared samples are missing", allow_module_level=True)


@dataclass
class Site:
    ctx: Context
    client: TestClient


def _drain(ctx: Context) -> list[str]:
    outcomes = []
    while (result := services.runner.run_next(ctx)) is not None:
        outcomes.append(result.outcome)
    return outcomes


def _drop(ctx: Context, name: str, data: bytes) -> None:
    inbox = ctx.settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_bytes(data)
    intake(ctx, path, copy=False)  # what the watcher does with a file that is ready


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("scans")
    url = f"sqlite:///{tmp / 'scans.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp, database_url=url, secret_key="test-secret-key-not-for-production")
    ctx = build_context(settings)
    with ctx.sessions() as session:
        accounts.create_user(session, "qa", "qa-pass-1", "qa")
        session.commit()
    _drop(ctx, "fax.tif", S.fax_tiff(S.render(FAXED, 200)))
    _drop(ctx, "IMG_0412.jpg", S.photo(S.render(PHOTOGRAPHED, 200)[0], seed=3))
    _drop(ctx, "report.pdf", TEXT_PDF.read_bytes())
    outcomes = _drain(ctx)
    assert outcomes.count("held") == 2 and "ingested" in outcomes, outcomes
    app = create_app(ctx, today=lambda: TODAY)
    with TestClient(app, follow_redirects=False) as client:
        token = csrf_of(client.get("/login").text)
        signed = client.post(
            "/login", data={"username": "qa", "password": "qa-pass-1", "csrf_token": token, "next": "/qa/scans"}
        )
        assert signed.status_code == 303
        yield Site(ctx, client)


def _exams(ctx: Context) -> list[dict[str, object]]:
    exported = json.loads(export_all(ctx, "json"))
    mine = [p for p in exported if p["patient_id"] == "98514022"]
    return mine[0]["exams"] if mine else []


def _scan_ids(ctx: Context) -> dict[str, int]:
    with ctx.sessions() as session:
        rows = session.execute(
            select(SourceFile.original_name, ScanRow.id).join(ScanRow, ScanRow.source_file_id == SourceFile.id)
        )
        return {name: pk for name, pk in rows}


def _truth(pdf: Path) -> dict[str, str]:
    return S.expected_values(S.truth_of(pdf))


def test_scans_are_held_and_nothing_of_them_is_trended_or_exported(site: Site) -> None:
    with site.ctx.sessions() as session:
        held = session.scalars(select(SourceFile).where(SourceFile.status == "held")).all()
        assert sorted(f.original_name for f in held) == ["IMG_0412.jpg", "fax.tif"]
        assert session.scalar(select(Exam).where(Exam.source == "ocr")) is None
    exams = _exams(site.ctx)
    assert [e["date"] for e in exams] == ["2020-03-18"]  # the text PDF's only
    page = site.client.get("/qa/scans")
    assert page.status_code == 200
    assert "fax.tif" in page.text and "IMG_0412.jpg" in page.text


def test_the_verification_page_shows_each_value_beside_its_crop_and_marks_the_doubtful(site: Site) -> None:
    scan = _scan_ids(site.ctx)["fax.tif"]
    page = site.client.get(f"/qa/scans/{scan}")
    assert page.status_code == 200
    assert 'name="v:L1-L4/-/bmd"' in page.text and 'name="v:patient_id"' in page.text
    crops = re.findall(r'src="(/qa/scans/\d+/crop/[^"]+)"', page.text)
    assert len(crops) >= 8
    image = site.client.get(crops[0].replace("&amp;", "&"))
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    with site.ctx.sessions() as session:
        values = session.get(ScanRow, scan).reading["values"]  # type: ignore[union-attr]
    truth = _truth(FAXED)
    for value in (
        v for v in values if v["key"].count("/") == 2
    ):  # every value read wrong is marked on the page, none looks certain
        want = truth.get(value["key"])
        if want is not None and value["text"] and f"{float(value['text']):.3f}" != want:
            assert value["doubtful"], value


def _confirm(site: Site, scan: int, truth: dict[str, str]) -> tuple[int, dict[str, str]]:
    """The reviewer's confirmation: each value compared with its crop, the wrong ones corrected."""
    page = site.client.get(f"/qa/scans/{scan}").text
    form = {"csrf_token": csrf_of(page)}
    corrected = {}
    for key, shown in re.findall(r'name="v:([^"]+)" value="([^"]*)"', page):
        want = truth.get(key, shown)
        if key.count("/") == 2 and shown and want == f"{float(shown):.3f}":
            want = shown
        form[f"v:{key}"] = want
        if want != shown:
            corrected[key] = want
    response = site.client.post(f"/qa/scans/{scan}/confirm", data=form)
    return response.status_code, corrected


def test_confirmed_scans_join_the_patients_trend_with_source_ocr(site: Site) -> None:
    ids = _scan_ids(site.ctx)
    for name, pdf in (("fax.tif", FAXED), ("IMG_0412.jpg", PHOTOGRAPHED)):
        truth = _truth(pdf)
        truth["device_model"] = "PRIMUS"
        truth["device_serial"] = "PRM15B0412"
        status, corrected = _confirm(site, ids[name], truth)
        assert status == 303
        with site.ctx.sessions() as session:
            event = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "scan_confirmed").order_by(AuditEvent.id.desc())
            ).first()
            assert event is not None and event.actor == "qa"
            assert {c["key"]: c["after"] for c in event.detail["changes"]} == corrected
    _drain(site.ctx)  # the evaluation the confirmation queued
    exams = _exams(site.ctx)
    assert [e["date"] for e in exams] == ["2016-03-09", "2018-03-14", "2020-03-18"]
    scenario = json.loads((PATIENT / "scenario.truth.json").read_text(encoding="utf-8"))
    for exam, want in zip(exams, scenario["exams"], strict=True):
        got = {(m["site"], m["side"]): m["bmd"] for m in exam["measurements"]}
        for m in want["measurements"]:
            assert got[(m["site"], m["side"])] == pytest.approx(m["bmd"]), (exam["date"], m)
    with site.ctx.sessions() as session:
        patient = session.scalars(select(Patient).where(Patient.identifier == "98514022")).one()
        assert sorted(e.source for e in patient.exams) == ["file", "ocr", "ocr"]
        assert {f.status for f in session.scalars(select(SourceFile))} == {"ingested"}
    page = site.client.get("/patients/98514022")
    assert page.status_code == 200
    assert page.text.count("source: ocr") >= 2
    assert "/qa/scans/" not in site.client.get("/qa/scans").text.split("<tbody>")[1].split("</tbody>")[0]


def test_a_rejected_scan_is_quarantined_with_the_reason(site: Site) -> None:
    _drop(site.ctx, "other.png", S.png(S.render(HOLOGIC, 200)[0], 200))
    assert _drain(site.ctx) == ["held"]
    scan = _scan_ids(site.ctx)["other.png"]
    page = site.client.get(f"/qa/scans/{scan}").text
    response = site.client.post(
        f"/qa/scans/{scan}/reject", data={"csrf_token": csrf_of(page), "reason": "wrong patient's folder"}
    )
    assert response.status_code == 303
    with site.ctx.sessions() as session:
        file = session.scalars(select(SourceFile).where(SourceFile.original_name == "other.png")).one()
        assert (file.status, file.reason_code) == ("quarantined", "ocr_rejected")
        assert "wrong patient's folder" in (file.reason_text or "")
        assert Path(file.stored_path or "").is_file()
        assert session.scalars(select(Patient).where(Patient.identifier == "RR953040")).first() is None


def test_a_scan_without_a_readable_patient_id_cannot_be_attached_to_anyone(site: Site) -> None:
    page_image = S.blank_out(HOLOGIC, 200, str(S.truth_of(HOLOGIC)["patient_id"]))  # folded over
    out = io.BytesIO()
    page_image.save(out, format="PDF", resolution=200.0)  # an image-only PDF, as a scanner makes
    _drop(site.ctx, "torn.pdf", out.getvalue())
    assert _drain(site.ctx) == ["held"]
    scan = _scan_ids(site.ctx)["torn.pdf"]
    page = site.client.get(f"/qa/scans/{scan}").text
    assert "patient ID could not be read" in page
    form = {"csrf_token": csrf_of(page)}
    form |= {f"v:{k}": v for k, v in re.findall(r'name="v:([^"]+)" value="([^"]*)"', page)}
    assert form.get("v:patient_id", "") == ""
    response = site.client.post(f"/qa/scans/{scan}/confirm", data=form)
    assert response.status_code == 303 and "error=" in response.headers["location"]
    with site.ctx.sessions() as session:
        assert session.get(ScanRow, scan).status == "pending"  # type: ignore[union-attr]
        assert session.scalars(select(Patient).where(Patient.identifier == "")).first() is None


def test_a_scan_uploaded_on_the_qa_page_enters_the_same_intake(site: Site) -> None:
    page = site.client.get("/qa/scans").text
    blank = Image.new("L", (1240, 1754), 255)  # a blank A4 page at 150 dpi: nothing to read
    ImageDraw.Draw(blank).text((100, 100), "referral letter", fill=0)
    response = site.client.post(
        "/qa/scans/upload",
        data={"csrf_token": csrf_of(page)},
        files={"file": ("referral.png", S.png(blank, 150), "image/png")},
    )
    assert response.status_code == 303 and "notice=" in response.headers["location"]
    assert _drain(site.ctx) == ["held"]
    scan = _scan_ids(site.ctx)["referral.png"]
    detail = site.client.get(f"/qa/scans/{scan}").text
    assert "no known report layout" in detail
    assert 'id="scan-confirm"' not in detail  # nothing read: it can only be rejected
    with site.ctx.sessions() as session:
        assert session.scalars(select(AuditEvent).where(AuditEvent.action == "scan_uploaded")).first() is not None
