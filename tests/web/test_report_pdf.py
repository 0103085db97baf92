"""The printable patient report: the patient's value at every site, the next scan date, the
therapies, on A4 or US Letter (chosen, or the region's default), in the user's language (Chinese
in a CJK font), audited as an export. The PDF's text is read back with pdfplumber."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

import pdfplumber
import pytest
from fastapi.testclient import TestClient

from tests.web.seed import REPLACED, SAME
from web import i18n

Login = Callable[[str], TestClient]
A4_PT = (595.3, 841.9)
LETTER_PT = (612.0, 792.0)


def _pdf(client: TestClient, path: str, **headers: str) -> tuple[str, tuple[float, float], int]:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "application/pdf"
    with pdfplumber.open(BytesIO(response.content)) as pdf:
        text = " ".join(" ".join(page.extract_text() or "" for page in pdf.pages).split())
        first = pdf.pages[0]
        return text, (float(first.width), float(first.height)), len(pdf.pages)


def _same_size(found: tuple[float, float], wanted: tuple[float, float]) -> bool:
    return abs(found[0] - wanted[0]) < 1 and abs(found[1] - wanted[1]) < 1


def _api(client: TestClient, patient: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/patients/{patient}").json()
    return data


@pytest.mark.parametrize("patient", [REPLACED, SAME])
def test_report_has_every_site_value_and_the_next_scan(login: Login, patient: str) -> None:
    client = login("clin")
    page = client.get(f"/patients/{patient}").text
    assert f"/patients/{patient}/report.pdf" in page, "the patient page links the report"
    text, _, _ = _pdf(client, f"/patients/{patient}/report.pdf?paper=a4")
    data = _api(client, patient)
    due = data["next_scan"]["due"]
    assert due and due in text, "the next scan date"
    spine_sets = {c["site"] for c in data["comparisons"] if c["site"].startswith("L")}
    checked = 0
    for exam in data["exams"]:
        for m in exam["measurements"]:
            if m["site"] in ("total_hip", "femoral_neck", "radius_33") or m["site"] in spine_sets:
                assert f"{m['bmd']:.3f}" in text, (m, exam["date"])  # every side of a dual hip too
                checked += 1
    assert checked >= 4
    assert "Bone densitometry (DXA) follow-up report" in text
    assert "Next scan" in text and "Therapy" in text


def test_refused_comparisons_print_no_change(login: Login) -> None:
    client = login("clin")
    text, _, _ = _pdf(client, f"/patients/{REPLACED}/report.pdf")
    assert "new baseline (machine changed)" in text
    assert text.count("not comparable:") >= 2 and "machine changed" in text  # table cells wrap
    assert "no cross-calibration between them" in text


@pytest.mark.parametrize(
    ("query", "accept", "size"),
    [
        ("?paper=a4", "en-US", A4_PT),
        ("?paper=letter", "en-GB", LETTER_PT),
        ("", "en-US,en;q=0.9", LETTER_PT),
        ("", "en-GB", A4_PT),
        ("", "zh-CN", A4_PT),
        ("?paper=nonsense", "", A4_PT),
    ],
)
def test_paper_is_chosen_or_follows_the_region(
    login: Login, query: str, accept: str, size: tuple[float, float]
) -> None:
    client = login("clin")
    _, found, _ = _pdf(client, f"/patients/{SAME}/report.pdf{query}", **{"Accept-Language": accept})
    assert _same_size(found, size), found


def test_report_in_chinese(login: Login) -> None:
    client = login("clin")
    text, _, _ = _pdf(client, f"/patients/{SAME}/report.pdf", **{"Accept-Language": "zh-CN,zh;q=0.9"})
    for term in ("骨密度", "随访报告", "下次复查", "最小有意义变化", "腰椎"):
        assert term in text, term
    assert "Bone densitometry" not in text and "Next scan" not in text
    due = _api(client, SAME)["next_scan"]["due"]
    y, m, d = (int(x) for x in due.split("-"))
    assert f"{y}年{m}月{d}日" in text


def test_report_download_is_audited(login: Login) -> None:
    client = login("admin")
    client.get(f"/patients/{SAME}/report.pdf?paper=letter")
    audit = client.get("/qa/audit.csv?kind=exports&action=patient_exported").text
    assert "pdf" in audit and "letter" in audit


def test_default_paper_per_region() -> None:
    for accept, paper in (("en-US", "letter"), ("en-CA", "letter"), ("en-GB", "a4"), ("zh-CN", "a4"), ("", "a4")):
        language = i18n.choose(None, accept)
        i18n.activate(language, i18n.format_locale(language, accept))
        try:
            assert i18n.paper() == paper, accept
        finally:
            i18n.activate("en")
