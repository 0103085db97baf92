"""Patients, patient, worklist, QA and exports: what each page and API route shows."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from db.models import AuditEvent, Exam, Job, SourceFile, TherapyRow
from services.exports import COMPARISON_CSV_COLUMNS, comparisons_csv
from tests.web.conftest import csrf_of
from tests.web.seed import FORMULA_ID, REPLACED, SAME, Seeded

Login = Callable[[str], TestClient]


def _audits(seeded: Seeded, action: str) -> list[AuditEvent]:
    with seeded.factory() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


# --------------------------------------------------------------------------- patients list


def test_patients_list_columns_and_search(login: Login) -> None:
    client = login("clin")
    data = client.get("/api/patients").json()
    assert data["total"] == 3
    same = next(p for p in data["patients"] if p["patient_id"] == SAME)
    assert same["last_exam"] == "2017-03-06"
    assert same["overdue"] is True and same["next_due"] == "2019-03-06"
    assert same["latest_significance"] == "loss" and "L1-L4" in same["latest_change"]
    assert same["who_category"] in ("low_bone_mass", "osteoporosis")
    assert [p["patient_id"] for p in client.get("/api/patients", params={"q": "same^"}).json()["patients"]] == [SAME]
    assert [p["patient_id"] for p in client.get("/api/patients", params={"q": "98910"}).json()["patients"]] == [
        REPLACED
    ]
    html = client.get("/patients", params={"q": "same"}).text
    assert SAME in html and REPLACED not in html


def test_patients_filters(login: Login) -> None:
    client = login("clin")
    overdue = client.get("/api/patients", params={"overdue": "true"}).json()["patients"]
    assert [p["patient_id"] for p in overdue] == [SAME]
    alerts = client.get("/api/patients", params={"alerts": "true"}).json()["patients"]
    assert all(p["open_alerts"] > 0 for p in alerts)
    assert SAME in [p["patient_id"] for p in alerts]


# --------------------------------------------------------------------------- one patient


def test_patient_page_charts_tables_and_refusals(login: Login, seeded: Seeded) -> None:
    client = login("clin")
    before = len(_audits(seeded, "patient_viewed"))
    html = client.get(f"/patients/{REPLACED}").text
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg"') >= 3  # L1-L4, total hip, femoral neck
    assert 'data-site="L1-L4"' in html and 'data-site="total_hip"' in html and 'data-site="femoral_neck"' in html
    assert html.count('class="point refused"') == 3  # first exam on the new machine, one per chart
    assert html.count('class="segment"') == 6  # two lines per chart, one per machine
    assert "different models" in html
    assert "Refused: different machine" in html
    assert "Untreated with a T-score" in html  # next scan reason
    assert 'data-source="default"' in html and "(configured default)" in html  # which LSC was used
    # no CDN, no inline script: the only script is the vendored htmx (tests/web/test_static_assets.py)
    assert "cdn" not in html.lower() and html.count("<script") == 1 and "<script>" not in html
    assert len(_audits(seeded, "patient_viewed")) == before + 1


def test_patient_api_is_the_export_shape_plus_context(login: Login) -> None:
    data = login("clin").get(f"/api/patients/{REPLACED}").json()
    assert {"patient_id", "exams", "comparisons", "next_scan", "therapies", "who_category"} <= set(data)
    assert len(data["exams"]) == 4
    assert data["exams"][2]["device"] == {"manufacturer": "HOLOGIC", "model": "Horizon W", "serial": "200457"}
    refused = [c for c in data["comparisons"] if c["status"] == "rejected_cross_machine"]
    assert len(refused) == 6 and all(c["percent_change"] is None for c in refused)
    assert data["next_scan"]["due"] == "2020-10-15"


def test_unknown_patient_is_404(login: Login) -> None:
    client = login("clin")
    assert client.get("/patients/nobody").status_code == 404
    assert client.get("/api/patients/nobody").status_code == 404


def test_trend_api_splits_machines(login: Login) -> None:
    data = login("clin").get(f"/api/patients/{REPLACED}/trend").json()
    spine = next(s for s in data["sites"] if s["site"] == "L1-L4")
    assert [p["segment"] for p in spine["points"]] == [0, 0, 1, 1]
    assert spine["points"][2]["vs_baseline_percent"] is None
    assert "different models" in spine["points"][2]["note"]
    assert spine["points"][0]["t_score"] == -2.4


# --------------------------------------------------------------------------- exports


def test_fhir_export_validates(login: Login, seeded: Seeded) -> None:
    response = login("clin").get(f"/api/patients/{REPLACED}/export", params={"format": "fhir"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    data = json.loads(response.text)
    Bundle.model_validate(data)  # raises when the Bundle is not valid FHIR
    resources = [e["resource"] for e in data["entry"]]
    reports = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    assert len(reports) == 4
    assert all(r["code"]["coding"][0]["code"] == "83311-1" for r in reports)
    assert all(len(r["result"]) == 6 for r in reports)  # 3 sites × (BMD, T-score); the seed has no Z
    serials = sorted(r["serialNumber"] for r in resources if r["resourceType"] == "Device")
    assert serials == ["200457", "45678"]
    bmd = [r for r in resources if r["resourceType"] == "Observation" and r["valueQuantity"]["code"] == "g/cm2"]
    assert len(bmd) == 12
    assert {o["code"]["coding"][0]["code"] for o in bmd} == {"24966-4", "46279-6", "80953-3"}
    assert _audits(seeded, "patient_exported")


def test_csv_export_one_row_per_comparison_escapes_formulas_and_keeps_numbers(login: Login) -> None:
    client = login("clin")
    response = client.get(f"/api/patients/{SAME}/export", params={"format": "csv"})
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert "dxa-patient-export_" in disposition and SAME not in disposition
    frame = pd.read_csv(io.StringIO(response.text), dtype={"patient_id": str})
    assert list(frame.columns) == list(COMPARISON_CSV_COLUMNS)  # the README's export schema, as the CLI
    assert len(frame) == 4 and set(frame["reference"]) == {"baseline", "previous"}
    assert frame["percent_change"].dtype.kind == "f" and (frame["percent_change"] < 0).all()  # not escaped
    formula = client.get(f"/api/patients/{FORMULA_ID}/export", params={"format": "csv"}).text
    assert formula.splitlines()[0].startswith("patient_id,") and len(formula.splitlines()) == 1  # one exam
    export = {
        "patient_id": FORMULA_ID,
        "exams": [],
        "comparisons": [
            {k: None for k in (*COMPARISON_CSV_COLUMNS, "from_exam", "to_exam")}
            | {"percent_change": -4.2, "dissimilar": False}
        ],
        "next_scan": None,
    }
    escaped = pd.read_csv(io.StringIO(comparisons_csv([export])))
    assert escaped["patient_id"][0] == "'" + FORMULA_ID and escaped["percent_change"][0] == -4.2


def test_json_export(login: Login) -> None:
    data = login("clin").get(f"/api/patients/{SAME}/export").json()
    assert data["patient_id"] == SAME and len(data["comparisons"]) == 4


# --------------------------------------------------------------------------- therapies


def test_add_therapy_reevaluates(login: Login, seeded: Seeded) -> None:
    client = login("clin")
    page = client.get(f"/patients/{REPLACED}").text
    before = client.get(f"/api/patients/{REPLACED}").json()["next_scan"]
    form = {"agent": "zoledronic acid", "start_date": "2018-11-01", "csrf_token": csrf_of(page)}
    response = client.post(f"/patients/{REPLACED}/therapies", data=form)
    assert response.status_code == 303
    after = client.get(f"/api/patients/{REPLACED}").json()
    assert after["therapies"][0]["drug_class"] == "iv_bisphosphonate"
    assert after["next_scan"] != before
    assert "Therapy saved" in client.get(response.headers["location"]).text
    assert _audits(seeded, "therapy_added")


def test_therapy_form_rejects_unknown_agent_and_forged_csrf(login: Login, seeded: Seeded) -> None:
    client = login("clin")
    token = csrf_of(client.get(f"/patients/{SAME}").text)
    bad = client.post(
        f"/patients/{SAME}/therapies",
        data={"agent": "water", "start_date": "2018-01-01", "csrf_token": token},
    )
    assert bad.status_code == 422 and "“water” is not an osteoporosis agent we know" in bad.text
    forged = client.post(f"/patients/{SAME}/therapies", data={"agent": "alendronate", "start_date": "2018-01-01"})
    assert forged.status_code == 403
    with seeded.factory() as session:
        assert session.scalar(select(TherapyRow).where(TherapyRow.agent == "water")) is None


def test_stop_therapy(login: Login, seeded: Seeded) -> None:
    client = login("clin")
    token = csrf_of(client.get(f"/patients/{SAME}").text)
    client.post(
        f"/patients/{SAME}/therapies",
        data={"agent": "denosumab", "start_date": "2017-04-01", "csrf_token": token},
    )
    therapy = client.get(f"/api/patients/{SAME}").json()["therapies"][-1]
    response = client.post(
        f"/patients/{SAME}/therapies/{therapy['id']}/stop",
        data={"stop_date": "2018-04-01", "csrf_token": token},
    )
    assert response.status_code == 303
    data = client.get(f"/api/patients/{SAME}").json()
    assert data["therapies"][-1]["stop_date"] == "2018-04-01"
    assert any(a["code"] == "denosumab_stopped" for a in data["next_scan"]["alerts"])


def test_therapy_api_with_token_and_csrf_for_sessions(anon: TestClient, login: Login, seeded: Seeded) -> None:
    body = {"agent": "raloxifene", "start_date": "2016-01-01"}
    response = anon.post(
        f"/api/patients/{FORMULA_ID}/therapies",
        json=body,
        headers={"Authorization": f"Bearer {seeded.token}"},
    )
    assert response.status_code == 201, response.text
    assert "next_scan" in response.json()
    client = login("clin")
    assert client.post(f"/api/patients/{FORMULA_ID}/therapies", json=body).status_code == 403
    token = csrf_of(client.get("/patients").text)
    ok = client.post(f"/api/patients/{FORMULA_ID}/therapies", json=body, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201


def test_a_therapy_change_whose_evaluation_fails_is_queued(
    login: Login, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The therapy is kept and the page says so; the evaluation waits in the job table."""
    import services.evaluation

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("evaluation down")

    monkeypatch.setattr(services.evaluation, "evaluate", broken)
    client = login("clin")
    token = csrf_of(client.get("/patients").text)
    body = {"agent": "teriparatide", "start_date": "2019-01-01"}
    answer = client.post(f"/api/patients/{FORMULA_ID}/therapies", json=body, headers={"X-CSRF-Token": token})
    assert answer.status_code == 201 and "queued" in answer.json()["warning"]
    with seeded.factory() as session:
        pk = seeded.patients[FORMULA_ID]
        job = session.scalar(select(Job).where(Job.kind == "evaluate_patient", Job.patient_id == pk))
        assert job is not None and job.state == "queued"


# --------------------------------------------------------------------------- worklist


def test_worklist_page_api_csv_ics(login: Login) -> None:
    client = login("clin")
    items = client.get("/api/worklist", params={"start": "2019-06-01", "end": "2021-12-31"}).json()["items"]
    due = {i["patient_id"]: i for i in items}
    assert due[SAME]["overdue"] is True
    assert REPLACED in due
    only_overdue = client.get("/api/worklist", params={"start": "2030-01-01", "end": "2030-02-01"}).json()["items"]
    assert SAME in [i["patient_id"] for i in only_overdue] and REPLACED not in [i["patient_id"] for i in only_overdue]
    assert all(i["overdue"] for i in only_overdue)
    none = client.get("/api/worklist", params={"start": "2030-01-01", "end": "2030-02-01", "overdue": "false"}).json()
    assert none["items"] == []
    assert SAME in client.get("/worklist").text
    csv = client.get("/worklist.csv", params={"start": "2019-06-01", "end": "2021-12-31"})
    assert csv.headers["content-type"].startswith("text/csv") and SAME in csv.text
    ics = client.get("/worklist.ics").text
    assert (
        ics.startswith("BEGIN:VCALENDAR\r\n")
        and "DTSTART;VALUE=DATE:" in ics
        and ics.rstrip().endswith("END:VCALENDAR")
    )


# --------------------------------------------------------------------------- QA


def test_qa_refused_comparisons_filters_and_csv(login: Login, seeded: Seeded) -> None:
    client = login("qa")
    rows = client.get("/api/qa/comparisons").json()["comparisons"]
    assert len(rows) == 6 and {r["patient_id"] for r in rows} == {REPLACED}
    assert all("Discovery SL" in r["from_device"] and "Horizon W" in r["to_device"] for r in rows)
    by_old = client.get("/api/qa/comparisons", params={"device": seeded.device_ids["45678"]}).json()["comparisons"]
    assert len(by_old) == 6
    assert client.get("/api/qa/comparisons", params={"device": seeded.device_ids["none"]}).json()["comparisons"] == []
    assert client.get("/api/qa/comparisons", params={"end": "2016-01-01"}).json()["comparisons"] == []
    csv = client.get("/qa/comparisons.csv").text
    assert csv.count(REPLACED) == 6 and "different models" in csv
    assert "different models" in client.get("/qa/comparisons").text


def test_qa_devices(login: Login) -> None:
    devices = login("qa").get("/api/qa/devices").json()["devices"]
    horizon = next(d for d in devices if d["serial"] == "200457")
    assert horizon["software_versions"] == ["13.6"]
    study = horizon["precision_studies"][0]
    assert [t["technologist"] for t in study["technologists_over_limit"]] == ["bob"]
    weak = next(d for d in devices if d["serial"] is None)
    assert weak["identity_strength"] == "weak"


def test_precision_calculator_preview_then_save(login: Login, seeded: Seeded) -> None:
    client = login("qa")
    token = csrf_of(client.get("/qa/devices").text)
    rows = ["technologist,patient,bmd"]  # the README's layout; machine and site come from the form
    rows += [f"carol,p{i},{1.0 + i * 0.01 + 0.01 * (-1) ** k:.3f}" for i in range(30) for k in (1, 2)]
    form = {"device": str(seeded.device_ids["45678"]), "site": "total_hip", "csrf_token": token}
    files = {"file": ("study.csv", "\n".join(rows).encode(), "text/csv")}
    preview = client.post("/qa/devices/precision", data=form, files=files)
    assert preview.status_code == 200, preview.text
    assert "RMS-SD" in preview.text and "Save study" in preview.text
    assert "0.0141 g/cm²" in preview.text  # sqrt(mean of per-patient variances) = 0.01·√2
    saved = client.post("/qa/devices/precision", data={**form, "action": "save", "csv_text": "\n".join(rows)})
    assert saved.status_code == 303
    old = next(d for d in client.get("/api/qa/devices").json()["devices"] if d["serial"] == "45678")
    assert old["precision_studies"][0]["site"] == "total_hip"
    assert abs(old["precision_studies"][0]["lsc_g_cm2"] - 2.77 * 0.01 * 2**0.5) < 1e-4
    # the new LSC applies to everyone scanned on that machine: their evaluations are queued
    with seeded.factory() as session:
        scanned = set(session.scalars(select(Exam.patient_id).where(Exam.device_id == seeded.device_ids["45678"])))
        queued = set(
            session.scalars(select(Job.patient_id).where(Job.kind == "evaluate_patient", Job.state == "queued"))
        )
    assert scanned and scanned <= queued


def test_precision_calculator_reports_bad_csv(login: Login, seeded: Seeded) -> None:
    client = login("qa")
    token = csrf_of(client.get("/qa/devices").text)
    form = {
        "device": str(seeded.device_ids["45678"]),
        "site": "L1-L4",
        "csrf_token": token,
        "csv_text": "a,b\n1,2",
    }
    response = client.post("/qa/devices/precision", data=form)
    assert response.status_code == 422 and "missing column" in response.text


def test_qa_ingest_and_reprocess(login: Login, seeded: Seeded) -> None:
    client = login("qa")
    files = client.get("/api/qa/ingest").json()["files"]
    assert {f["status"] for f in files} == {"quarantined", "ingested"}
    assert "The DICOM file ends early." in client.get("/qa/ingest").text
    token = csrf_of(client.get("/qa/ingest").text)
    response = client.post(f"/qa/ingest/{seeded.quarantined_file}/reprocess", data={"csrf_token": token})
    assert response.status_code == 303
    with seeded.factory() as session:
        source = session.get(SourceFile, seeded.quarantined_file)
        assert source is not None and source.status == "pending"
        job = session.scalar(select(Job).where(Job.source_file_id == seeded.quarantined_file))
        assert job is not None and job.state == "queued"
    again = client.post(f"/qa/ingest/{seeded.quarantined_file}/reprocess", data={"csrf_token": token})
    assert again.status_code == 404


def test_precision_calculator_pools_technologists_like_the_cli(login: Login, seeded: Seeded) -> None:
    """Three technologists with 10 patients x 2 scans each: too few to judge one by one (ISCD asks
    30 degrees of freedom of each), enough together for the facility's LSC, as `dxa precision
    import` computes it."""
    client = login("qa")
    token = csrf_of(client.get("/qa/devices").text)
    rows = ["device_serial,site,technologist,patient,bmd_1,bmd_2"]  # `dxa precision import`'s file as it is
    rows += [f"45678,L1-L4,{t},{t}{i},{1.0 + i * 0.01:.3f},{1.01 + i * 0.01:.3f}" for t in "abc" for i in range(10)]
    form = {
        "device": str(seeded.device_ids["45678"]),
        "site": "L1-L4",
        "csrf_token": token,
        "csv_text": "\n".join(rows),
    }
    preview = client.post("/qa/devices/precision", data=form)
    assert preview.status_code == 200, preview.text
    assert preview.text.count("not judged") == 3 and "Save study" in preview.text
    assert f"{0.01 / 2**0.5:.4f} g/cm²" in preview.text  # every pair differs by 0.01
