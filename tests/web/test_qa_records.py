"""QA records: the quarantine grouped by reason with stray files apart, same-named files told
apart, duplicates with how often they arrived; the audit page with filters and its CSV."""

from __future__ import annotations

import io
from collections.abc import Callable

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from db import files
from tests.web.seed import Seeded

Login = Callable[[str], TestClient]


@pytest.fixture(scope="module", autouse=True)
def more_files(seeded: Seeded) -> None:
    with seeded.factory() as session:
        for i in range(60):  # a shared folder's other documents
            reg = files.register_source_file(session, sha256=f"{i:064x}", original_name=f"notes-{i}.txt")
            files.mark_quarantined(session, reg.file, reason_code="unrecognised_format", reason_text="not DXA")
        for sha in ("e1" * 32, "e2" * 32):  # two rejects with one name
            reg = files.register_source_file(session, sha256=sha, original_name="scan.pdf")
            files.mark_quarantined(session, reg.file, reason_code="encrypted_pdf", reason_text="Encrypted PDF.")
        for _ in range(3):
            files.register_source_file(session, sha256="cd" * 32, original_name="fine.dcm")
        session.commit()


def test_quarantine_grouped_with_stray_files_apart(login: Login) -> None:
    client = login("qa")
    page = client.get("/qa/ingest", params={"reason": "", "name": "", "start": "", "end": "", "page": ""})
    assert page.status_code == 200
    html = page.text
    assert 'data-reason="unrecognised_format"' in html and ">60<" in html and 'data-reason="encrypted_pdf"' in html
    main = html.split('id="quarantine"')[1].split("</table>")[0]
    assert "notes-" not in main and main.count("scan.pdf") == 2 and "broken.dcm" in main
    assert "e1e1e1e1e1e1" in main and "e2e2e2e2e2e2" in main  # same name, told apart by the SHA prefix
    assert '<details class="card" id="stray-files">' in html and "60 received files" in html
    stray = client.get("/qa/ingest", params={"reason": "stray", "page": "2"}).text
    assert "61" not in stray.split('id="quarantine-count"')[1][:40] and "Page 2 of 2" in stray
    named = client.get("/qa/ingest", params={"name": "scan", "reason": "encrypted_pdf"}).text
    assert named.count("<tr data-file") == 2


def test_duplicates_with_how_often_received(login: Login) -> None:
    html = login("qa").get("/qa/ingest").text
    table = html.split('id="duplicates"')[1].split("</table>")[0]
    assert "fine.dcm" in table and ">4<" in table  # received once, then three more times


def test_audit_page_filters_and_csv(login: Login) -> None:
    client = login("qa")
    login("clin").get("/patients")
    page = client.get("/qa/audit", params={"kind": "sign-ins", "action": "", "actor": "", "start": "", "end": ""})
    assert page.status_code == 200
    table = page.text.split('id="audit"')[1]
    assert "<code>login</code>" in table and "patient_viewed" not in table
    csv = client.get("/qa/audit.csv", params={"kind": "sign-ins", "actor": "clin"})
    frame = pd.read_csv(io.StringIO(csv.text))
    assert len(frame) >= 1 and set(frame["action"]) == {"login"} and set(frame["actor"]) == {"clin"}
    assert 'filename="audit_sign-ins.csv"' in csv.headers["content-disposition"]
    exported = client.get("/api/qa/audit", params={"kind": "exports"}).json()["events"]
    assert any(e["action"] == "audit_exported" for e in exported)
    assert client.get("/api/qa/audit", params={"start": "yesterday"}).status_code == 422
    assert login("clin").get("/qa/audit").status_code == 403
