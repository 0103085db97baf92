"""The PDF parser on the shared samples (written independently of it), layout by layout."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import EncryptedPdf, NotDxaResult, ParseError
from ingest.pdf import parse_pdf
from ingest.pdf.parse import parse_pdf_text
from ingest.pdf.text import read_pdfplumber
from ingest.report import ParsedReport

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "samples"
PDFS = sorted(SAMPLES.rglob("*.pdf")) if SAMPLES.is_dir() else []
ENCAPSULATED = (
    sorted(
        p for p in SAMPLES.rglob("*.dcm") if "encapsulated" in json.loads(Path(f"{p}.truth.json").read_text())["kind"]
    )
    if SAMPLES.is_dir()
    else []
)

pytestmark = pytest.mark.skipif(not PDFS, reason="../shared/samples is not there")


def _pdf_bytes(path: Path) -> bytes:
    if path.suffix == ".dcm":  # the PDF inside an Encapsulated PDF object
        import pydicom

        return bytes(pydicom.dcmread(path, stop_before_pixels=True).EncapsulatedDocument)
    return path.read_bytes()


def _truth(path: Path) -> dict[str, Any]:
    return dict(json.loads(Path(f"{path}.truth.json").read_text()))


def _parse(rel: str) -> ParsedReport:
    return parse_pdf(_pdf_bytes(SAMPLES / rel), rel)


def _id(p: Path) -> str:
    return str(p.relative_to(SAMPLES))


@pytest.mark.parametrize("path", PDFS + ENCAPSULATED, ids=_id)
def test_sample_gives_its_truth(path: Path) -> None:
    truth = _truth(path)
    if truth["expect"] == "reject":
        with pytest.raises(ParseError) as info:
            parse_pdf(_pdf_bytes(path), path.name)
        reason = info.value.message.lower()
        assert any(word in reason for word in truth["reason_contains"]), reason
        return
    report = parse_pdf(_pdf_bytes(path), path.name)
    assert report.format == truth["format"]["layout"]
    assert report.patient.patient_id == truth["patient_id"]
    assert report.exam_date == date.fromisoformat(truth["exam_date"])
    device = truth["device"]
    assert (report.device.manufacturer, report.device.model, report.device.serial) == (
        device["manufacturer"],
        device["model"],
        device["serial"],
    )
    got = {(m.site, m.side): m for m in report.measurements}
    want = {(m["site"], m["side"]): m for m in truth["measurements"]}
    assert set(got) == set(want)
    for key, expected in want.items():
        m = got[key]
        assert m.bmd == pytest.approx(expected["bmd"], abs=0.0005), key
        for value, exp in ((m.t_score, expected["t_score"]), (m.z_score, expected["z_score"])):
            assert (value is None) == (exp is None), key
            if exp is not None:
                assert value == pytest.approx(exp, abs=0.05), key
        assert m.provenance.startswith("pdf p1 line ")
    # every LSC we report was printed with that value (the truth also lists some that are not printed)
    for site, lsc in report.extras.printed_lsc_g_cm2:
        assert truth["printed_lsc_g_cm2"][site] == pytest.approx(lsc)


def _without_provenance(report: ParsedReport) -> ParsedReport:
    return replace(
        report,
        measurements=tuple(replace(m, provenance="") for m in report.measurements),
        extras=replace(report.extras, history=tuple(replace(h, provenance="") for h in report.extras.history)),
    )


@pytest.mark.parametrize("path", [p for p in PDFS if _truth(p)["expect"] == "accept"], ids=_id)
def test_pdfium_and_pdfplumber_text_give_the_same_report(path: Path) -> None:
    """The templates must not depend on one reader's quirks (pdfium drops some CJK glyphs, pdfplumber
    merges header cells into lines)."""
    data = path.read_bytes()
    fast = parse_pdf(data, path.name)
    slow = parse_pdf_text(read_pdfplumber(data, 40))
    assert _without_provenance(fast) == _without_provenance(slow)


def test_hologic_dual_hip_groups_give_left_right_mean_and_drop_diff() -> None:
    report = _parse("single/pdf/hologic_dualhip_report.pdf")
    assert report.scan_type == "dual_hip"
    mean_neck = next(m for m in report.measurements if (m.site, m.side) == ("femoral_neck", "mean"))
    assert (mean_neck.bmd, mean_neck.bmc_g, mean_neck.area_cm2) == (0.759, 3.60, 4.74)
    assert mean_neck.provenance == "pdf p1 line 38"
    assert len(report.measurements) == 6  # no |Diff.| rows
    assert report.extras.printed_lsc_g_cm2 == (("total_hip", 0.026),)
    assert report.extras.reference_database == "2008 BMDCS/NHANES White Female"
    assert report.device.software_version == "13.6.0.5"
    assert report.patient.birth_date == date(1953, 7, 11)


def test_hologic_spine_keeps_contiguous_ranges_only_and_reads_the_day_first_trend() -> None:
    report = _parse("patients/RR594543_same_exam_twice/20191119_spine_report.pdf")
    sites = [m.site for m in report.measurements]
    assert "L1-L4" in sites and not any("," in s for s in sites)
    assert report.vertebral_set == "L1-L4"  # the analysed set, not the first range printed
    history = {h.date: h for h in report.extras.history}
    assert set(history) == {date(2019, 11, 19), date(2017, 11, 14)}  # "14.11.2017" is day-first
    assert history[date(2019, 11, 19)].change_vs_baseline_pct == 2.5
    assert history[date(2017, 11, 14)].bmd == 0.806
    assert dict(report.extras.printed_lsc_g_cm2) == {"L1-L4": 0.024}


def test_ge_footer_splits_model_and_serial_and_trend_keeps_vendor_markers() -> None:
    report = _parse("patients/1713644_late_ge_sr/20200121_ge_ap_spine.pdf")
    assert (report.device.model, report.device.serial) == ("Lunar Prodigy", "DF+500475")
    assert report.vertebral_set == "L1-L4"
    assert report.device.software_version == "16.10.022"  # from the PDF's Creator, not the page
    assert report.extras.reference_database == "USA (Combined NHANES/Lunar)"
    assert report.accession == "2001212322"
    latest, baseline = report.extras.history
    assert (latest.site, latest.date, latest.bmd) == ("L1-L4", date(2020, 1, 21), 0.876)
    assert latest.change_vs_previous_g_cm2 == 0.041 and latest.change_vs_baseline_pct == 4.9
    assert latest.significant_marker and not baseline.significant_marker
    assert baseline.date == date(2018, 4, 10)  # month-first on this layout


def test_ge_single_femur_takes_its_side_from_the_page_title() -> None:
    report = _parse("patients/1713644_late_ge_sr/20180410_ge_left_femur.pdf")
    assert {m.side for m in report.measurements} == {"left"}
    assert "Shaft" not in {m.site for m in report.measurements}
    assert dict(report.extras.printed_lsc_g_cm2) == {"total_hip": 0.026}


def test_ge_dual_femur_mean_rows() -> None:
    report = _parse("single/pdf/ge_dualfemur_report.pdf")
    got = {(m.site, m.side): m.bmd for m in report.measurements}
    assert got[("total_hip", "mean")] == 0.763 and got[("femoral_neck", "right")] == 0.663
    assert dict(report.extras.printed_lsc_g_cm2) == {"total_hip": 0.025}  # "for DualFemur Total Mean"


def test_norland_drops_total_sbmd_and_keeps_short_and_long_term_change() -> None:
    report = _parse("patients/1272586_norland_untreated/20190820_norland_spine.pdf")
    assert [m.site for m in report.measurements] == ["L2-L4", "L2", "L3", "L4"]
    assert report.vertebral_set == "L2-L4"
    assert all(m.bmd < 2 for m in report.measurements)  # the 820 mg/cm² sBMD is not a site
    rows = {(h.site, h.date): h for h in report.extras.history}
    current = rows[("L2-L4", date(2019, 8, 20))]
    assert (current.bmd, current.change_vs_previous_pct, current.change_vs_baseline_pct) == (
        0.855,
        -3.5,
        -5.6,
    )
    assert rows[("L2-L4", date(2015, 8, 4))].bmd == 0.906
    assert report.device.serial == "3840"


def test_primus_chinese_dates_sides_and_history_table_are_not_exams() -> None:
    report = _parse("patients/98514022_primus_followup_zh/20200318_骨密度报告.pdf")
    assert report.exam_date == date(2020, 3, 18)
    assert len(report.measurements) == 3  # the 历次检查对比 rows are history, not measurements
    assert {(m.site, m.side) for m in report.measurements} == {
        ("L1-L4", None),
        ("femoral_neck", "left"),
        ("total_hip", "left"),
    }
    history = report.extras.history
    assert len(history) == 9
    assert {h.date for h in history} == {date(2020, 3, 18), date(2018, 3, 14), date(2016, 3, 9)}
    neck_2016 = next(h for h in history if h.site == "femoral_neck" and h.date == date(2016, 3, 9))
    assert (neck_2016.side, neck_2016.bmd) == ("left", 0.561)
    assert report.accession == "2003183472" and report.patient.sex == "F"


def test_encrypted_pdf_says_password_protected() -> None:
    with pytest.raises(EncryptedPdf, match="encrypted PDF: password protected"):
        _parse("negative/encrypted_report.pdf")


def test_iva_page_is_a_dxa_page_with_no_bmd() -> None:
    with pytest.raises(NotDxaResult, match="no BMD results") as info:
        _parse("negative/iva_report_no_bmd.pdf")
    assert "4942606" not in info.value.message and "Nguyen" not in info.value.message


def test_questionnaire_inside_encapsulated_pdf_is_not_a_dxa_report() -> None:
    with pytest.raises(NotDxaResult, match="not a DXA report: questionnaire"):
        _parse("negative/screening_form_encapsulated.dcm")
