"""Shared sample PDFs as hospitals send them: several reports in one file, rotated, re-saved.

Every variant must give exactly the original reports' values, each under its own patient, or be
refused with a reason; a value under the wrong patient or a report or site gone is never allowed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.errors import MalformedResults, PatientMismatch
from ingest.parse import ParseLimits, parse_file_reports
from tests.conftest import skip_or_fail
from tests.unit.ingest.pdf_variants import (
    SINGLE_VARIANTS,
    accepted_pdfs,
    concat,
    gs_pdfwrite,
    judge,
    missing_tools,
    truth_of,
)
from tests.unit.ingest.test_pdf_synthetic import HOLOGIC_LINES, build_pdf
from tests.unit.ingest.test_shared_samples import SAMPLES

PDFS = accepted_pdfs() if SAMPLES.is_dir() else []
SINGLE = SAMPLES / "single" / "pdf"
GE_PATIENT = SAMPLES / "patients" / "1713644_late_ge_sr"
NORLAND = SAMPLES / "patients" / "1272586_norland_untreated"
HOLOGIC_VS_GE = SAMPLES / "patients" / "5785022_hologic_vs_ge"

# Variants that change nothing a reader should see: the values must come out exactly.
LOSSLESS = {"rotate_90", "rotate_270", "trailing_blank_page", "qpdf_linearized", "qpdf_object_streams"}

MULTI = {
    "two_vendors_two_patients": [SINGLE / "hologic_spine_report.pdf", SINGLE / "ge_ap_spine_report.pdf"],
    "one_patient_two_dates": [GE_PATIENT / "20180410_ge_ap_spine.pdf", GE_PATIENT / "20200121_ge_ap_spine.pdf"],
    "one_patient_three_dates_norland": sorted(NORLAND.glob("*.pdf")),
    "same_vendor_two_patients": [SINGLE / "ge_ap_spine_report.pdf", HOLOGIC_VS_GE / "20160112_ge_ap_spine.pdf"],
    "one_patient_two_scan_types": [GE_PATIENT / "20180410_ge_ap_spine.pdf", GE_PATIENT / "20180410_ge_left_femur.pdf"],
    "four_layouts": [
        SINGLE / "norland_spine_report.pdf",
        SINGLE / "primus_report_zh.pdf",
        SINGLE / "hologic_dualhip_report.pdf",
        SINGLE / "ge_dualfemur_report.pdf",
    ],
}


@pytest.fixture(autouse=True)
def _samples() -> None:
    if not PDFS:
        skip_or_fail("../shared/samples not present")


@pytest.mark.parametrize("case", sorted(MULTI))
def test_a_file_of_several_reports_gives_each_report_its_own_patient(case: str) -> None:
    files = MULTI[case]
    outcome = judge(concat(*(f.read_bytes() for f in files)), [truth_of(f) for f in files])
    assert outcome.verdict == "correct", outcome.detail


def test_reports_in_any_order_and_the_provenance_names_the_file_page() -> None:
    names = ("ge_ap_spine_report.pdf", "hologic_spine_report.pdf", "norland_spine_report.pdf")
    files = [SINGLE / name for name in names]
    reports = parse_file_reports(concat(*(f.read_bytes() for f in files)), "x.pdf", ParseLimits())
    assert [r.patient.patient_id for r in reports] == [truth_of(f)["patient_id"] for f in files]
    for page, report in enumerate(reports, start=1):
        assert all(m.provenance.startswith(f"pdf p{page} ") for m in report.measurements)


def test_a_page_naming_another_patient_inside_a_report_is_refused() -> None:
    report = (SINGLE / "hologic_spine_report.pdf").read_bytes()
    stray = build_pdf([["Patient ID: ZZ999999 Ethnicity: White", "Trend: L1-L4", "Comment: none"]])
    with pytest.raises(PatientMismatch) as info:
        parse_file_reports(concat(report, stray), "x.pdf", ParseLimits())
    assert "different patients" in info.value.message
    assert "ZZ999999" not in info.value.message  # no patient data in reasons


def test_a_cover_page_of_another_patient_before_the_first_report_is_refused() -> None:
    cover = build_pdf([["Referral letter", "Patient ID: ZZ999999 Ethnicity: White"]])
    with pytest.raises(PatientMismatch):
        parse_file_reports(concat(cover, (SINGLE / "ge_ap_spine_report.pdf").read_bytes()), "x.pdf", ParseLimits())


def test_one_page_printing_two_patients_is_refused() -> None:
    lines = [*HOLOGIC_LINES, "Patient ID: ZZ000999 Ethnicity: White Weight: 60.0 kg"]
    with pytest.raises(PatientMismatch):
        parse_file_reports(build_pdf([lines]), "x.pdf", ParseLimits())


def test_a_site_printed_twice_with_different_values_is_refused() -> None:
    i = next(i for i, line in enumerate(HOLOGIC_LINES) if line.startswith("L1-L4") or line.startswith("Total "))
    lines = [*HOLOGIC_LINES[: i + 1], HOLOGIC_LINES[i].replace("0.", "1.", 1), *HOLOGIC_LINES[i + 1 :]]
    with pytest.raises(MalformedResults):
        parse_file_reports(build_pdf([lines]), "x.pdf", ParseLimits())


@pytest.mark.parametrize("variant", sorted(SINGLE_VARIANTS))
def test_every_sample_pdf_variant_is_right_or_refused(variant: str) -> None:
    if missing_tools() and variant.startswith(("qpdf", "gs", "cairo")):
        skip_or_fail(f"system packages missing: {missing_tools()} (make system-deps)")
    build = SINGLE_VARIANTS[variant]
    wrong = []
    for sample in PDFS:
        outcome = judge(build(sample.read_bytes()), [truth_of(sample)])
        if outcome.verdict == "wrong" or (variant in LOSSLESS and outcome.verdict != "correct"):
            wrong.append(f"{Path(sample).name}: {outcome.verdict} {outcome.detail}")
    assert wrong == []


def test_a_site_row_whose_values_cannot_be_read_is_refused_not_dropped() -> None:
    lines = [line.replace("0.636", "n.a.") if line.startswith("Troch") else line for line in HOLOGIC_LINES]
    with pytest.raises(MalformedResults) as info:
        parse_file_reports(build_pdf([lines]), "x.pdf", ParseLimits())
    assert "trochanter" in info.value.message and "fewer sites" in info.value.message


def test_a_garbled_text_layer_is_refused_with_that_reason() -> None:
    if missing_tools():
        skip_or_fail(f"system packages missing: {missing_tools()} (make system-deps)")
    outcome = judge(
        gs_pdfwrite((SINGLE / "primus_report_zh.pdf").read_bytes()), [truth_of(SINGLE / "primus_report_zh.pdf")]
    )
    assert outcome.verdict == "quarantined" and "garbled" in outcome.detail
