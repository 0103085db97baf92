"""The day/month order of a report's numeric dates is proved from the report, never guessed: the
shared samples reprinted with numbers only (no month in words), in either order, with and without
the scan ID and the units that mark a locale, must read every date right or be refused."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from ingest.dates import parse_date
from ingest.errors import AmbiguousDate
from ingest.parse import ParseLimits, parse_file_reports
from ingest.pdf.date_order import report_date_order
from ingest.pdf.template import builtin_templates
from tests.conftest import skip_or_fail
from tests.unit.ingest.pdf_variants import accepted_pdfs, judge, truth_of
from tests.unit.ingest.spellings import (
    Rewrite,
    body_units,
    numeric_dates_everywhere,
    rewritten_all,
    sample_text,
    without_scan_id,
)
from tests.unit.ingest.test_shared_samples import SAMPLES

PDFS = accepted_pdfs() if SAMPLES.is_dir() else []


def _template(name: str):  # type: ignore[no-untyped-def]
    return next(t for t in builtin_templates() if t.name == name)


HOLOGIC_US = """Name: Doe, Jane Sex: Female Height: {height}
Patient ID: X1 Weight: {weight}
DOB: 02/01/1950
Scan Date: 03/04/2024 ID: {scan_id}
Analysis: 03/04/2024 13:03 Version 13.6.0.5"""


@pytest.mark.parametrize(
    ("height", "weight", "scan_id", "envelope", "expected"),
    [
        ("64.0 in", "150.0 lb", "Z00000000", (), "MDY"),  # US units
        ("162.6 cm", "68.0 kg", "A0304240D", (), "MDY"),  # the scan ID encodes March 4
        ("162.6 cm", "68.0 kg", "A0403240D", (), "DMY"),  # ... or 3 April
        ("162.6 cm", "68.0 kg", "Z00000000", (date(2024, 4, 3),), "DMY"),  # the DICOM header's date
        ("162.6 cm", "68.0 kg", "Z00000000", (), None),  # metric units prove nothing: refused
        ("5' 4\"", "150 lbs.", "Z00000000", (), "MDY"),
    ],
)
def test_numeric_dates_take_their_order_from_the_report(
    height: str, weight: str, scan_id: str, envelope: tuple[date, ...], expected: str | None
) -> None:
    text = HOLOGIC_US.format(height=height, weight=weight, scan_id=scan_id)
    hologic = _template("pdf_hologic")
    if expected is None:
        with pytest.raises(AmbiguousDate) as info:
            report_date_order(hologic, text, "03/04/2024", envelope_dates=envelope)
        assert "03/04" not in info.value.message  # no date of the patient's in the reason
    else:
        assert report_date_order(hologic, text, "03/04/2024", envelope_dates=envelope) == expected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("Printed 11/19/2024", "MDY"),  # a day over 12 anywhere proves the order
        ("Printed 19/11/2024", "DMY"),
        ("Calibration: 19.11.2024", "DMY"),  # dotted dates are day first
        ("Printed March 5, 2024", "MDY"),  # a month in words shows the locale
        ("Printed 5 March 2024", "DMY"),
        ("Printed 5 March 2024, March 5, 2024", None),  # both locales: no evidence
        ("Printed 07/07/2024", None),
    ],
)
def test_a_day_over_12_dots_or_word_dates_elsewhere_decide(extra: str, expected: str | None) -> None:
    text = HOLOGIC_US.format(height="162.6 cm", weight="68.0 kg", scan_id="Z00000000") + "\n" + extra
    hologic = _template("pdf_hologic")
    if expected is None:
        with pytest.raises(AmbiguousDate):
            report_date_order(hologic, text, "03/04/2024")
    else:
        assert report_date_order(hologic, text, "03/04/2024") == expected


def test_dates_that_read_alike_need_no_evidence() -> None:
    text = "Scan Date: 07/07/2024\nDOB: 01/01/1950\nHeight: 160 cm"
    assert report_date_order(_template("pdf_hologic"), text, "07/07/2024") in ("DMY", "MDY")


def test_a_printed_date_that_one_order_cannot_read_beats_a_field_in_another_spelling() -> None:
    # A US printout whose birth date was reprinted in a UK spelling is still month first.
    text = "Scan Date: 03/04/2024\nDOB: 7 March 1950\nAnalyzed: 03/04/2024\nPrinted 03/14/2024"
    assert report_date_order(_template("pdf_ge_encore"), text, "03/04/2024") == "MDY"


def _expect(sample_kind: str, order: str, keep_id: bool, units: str, data: bytes, truth: dict[str, Any]) -> str:
    """'correct' when the variant carries evidence of its order; 'either' when it may be refused."""
    has_id = sample_kind in ("pdf_hologic", "pdf_norland")
    if (keep_id and has_id) or (order == "MDY" and units == "us"):
        return "correct"
    return "either"


_SEPARATORS = {"/": "slash", ".": "dot", "-": "dash"}
VARIANTS: dict[str, tuple[str, str, bool, str]] = {
    f"{order}-{_SEPARATORS[sep]}-{'scan_id' if keep else 'no_scan_id'}-{units}_units": (order, sep, keep, units)
    for order, sep in (("MDY", "/"), ("DMY", "/"), ("DMY", "."), ("DMY", "-"))
    for keep in (True, False)
    for units in ("us", "metric")
    if not (order == "DMY" and units == "us")  # imperial units mark a US printout (documented limit)
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_numbers_only_reports_are_read_right_or_refused(variant: str) -> None:
    if not PDFS:
        skip_or_fail("../shared/samples not present")
    order, sep, keep_id, units = VARIANTS[variant]
    seen: dict[str, int] = {"correct": 0, "quarantined": 0}
    for sample in PDFS:
        truth = truth_of(sample)
        _, template = sample_text(sample)
        if template.date_order == "YMD":
            continue
        rewrites: list[Rewrite] = [numeric_dates_everywhere(order, sep), body_units(units)]
        if not keep_id:
            rewrites.append(without_scan_id)
        data = rewritten_all(sample, truth, rewrites)
        outcome = judge(data, [truth])
        assert outcome.verdict != "wrong", f"{sample.name}: {outcome.detail}"
        seen[outcome.verdict] += 1
        if outcome.verdict == "quarantined":
            assert outcome.detail.startswith("ambiguous_date"), f"{sample.name}: {outcome.detail}"
            assert _expect(truth["kind"], order, keep_id, units, data, truth) == "either", sample.name
            continue
        report = parse_file_reports(data, sample.name, ParseLimits())[0]
        if truth.get("birth_date"):
            assert report.patient.birth_date == date.fromisoformat(truth["birth_date"]), sample.name
        original = parse_file_reports(sample.read_bytes(), sample.name, ParseLimits())[0]
        trend = sorted({row.date for row in report.extras.history})
        assert trend == sorted({row.date for row in original.extras.history}), f"{sample.name}: trend {trend}"
    assert seen["correct"] > 0
    if sep == ".":
        assert seen["quarantined"] == 0  # dotted dates are day first: nothing is ambiguous


def test_parse_date_still_never_flips_to_fit() -> None:
    assert parse_date("13/04/2016", "MDY") is None
