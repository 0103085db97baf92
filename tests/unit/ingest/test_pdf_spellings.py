"""Every date field, unit, decimal mark and site label of every PDF layout, in the other spellings
its vendor prints: the shared samples reprinted along one axis at a time must give the sample's
own truth, as a PDF and inside an Encapsulated PDF DICOM."""

from __future__ import annotations

from datetime import date

import pytest

from ingest.dates import parse_date
from ingest.parse import ParseLimits, parse_file_reports
from tests.conftest import skip_or_fail
from tests.unit.ingest.pdf_variants import accepted_pdfs, judge, truth_of
from tests.unit.ingest.spellings import axes, encapsulated, rewritten, spellings
from tests.unit.ingest.test_shared_samples import SAMPLES

PDFS = accepted_pdfs() if SAMPLES.is_dir() else []
AXES = axes()


@pytest.mark.parametrize("axis", sorted(AXES))
def test_each_layout_reads_the_spellings_its_vendor_prints(axis: str) -> None:
    if not PDFS:
        skip_or_fail("../shared/samples not present")
    applied, problems = set(), []
    for sample in PDFS:
        truth = truth_of(sample)
        data = rewritten(sample, truth, AXES[axis])
        if data is None:
            continue
        applied.add(truth["kind"])
        outcome = judge(data, [truth])
        if outcome.verdict != "correct":
            problems.append(f"{sample.name}: {outcome.verdict} {outcome.detail}")
        elif axis.startswith("birth_date"):
            report = parse_file_reports(data, sample.name, ParseLimits())[0]
            if report.patient.birth_date != date.fromisoformat(truth["birth_date"]):
                problems.append(f"{sample.name}: birth date {report.patient.birth_date}")
    assert problems == []
    assert applied, "the axis applies to no layout: the rewrite is broken"


@pytest.mark.parametrize("axis", ["exam_date:us_long", "exam_date:chinese", "decimal_comma", "unit_mg_cm2"])
def test_encapsulated_pdf_twins_read_the_same_spellings(axis: str) -> None:
    if not PDFS:
        skip_or_fail("../shared/samples not present")
    for sample in PDFS:
        truth = truth_of(sample)
        data = rewritten(sample, truth, AXES[axis])
        if data is None:
            continue
        outcome = judge(encapsulated(data, truth["patient_id"]), [truth])
        assert outcome.verdict == "correct", f"{sample.name}: {outcome.detail}"


def test_an_envelope_naming_another_patient_is_refused() -> None:
    if not PDFS:
        skip_or_fail("../shared/samples not present")
    sample = PDFS[0]
    outcome = judge(encapsulated(sample.read_bytes(), "ZZ0000001"), [truth_of(sample)])
    assert outcome.verdict == "quarantined" and outcome.detail.startswith("patient_mismatch")


@pytest.mark.parametrize(
    ("text", "order", "expected"),
    [
        ("03/04/2016", "DMY", date(2016, 4, 3)),
        ("03/04/2016", "MDY", date(2016, 3, 4)),
        ("13/04/2016", "MDY", None),  # never flipped because a 13 cannot be a month
        ("04/13/2016", "DMY", None),
        ("July 7, 2015", "DMY", date(2015, 7, 7)),
        ("7th July 2015", "MDY", date(2015, 7, 7)),
        ("2015年7月7日", "DMY", date(2015, 7, 7)),
        ("2015-7-7", "MDY", date(2015, 7, 7)),
        ("7. März 2015", "DMY", date(2015, 3, 7)),
        ("7 de julio de 2015", "DMY", date(2015, 7, 7)),
        ("07-Jul-15", "DMY", None),  # two-digit years are refused
        ("7 Julember 2015", "DMY", None),
    ],
)
def test_dates_take_day_and_month_order_from_the_layout_never_from_the_value(
    text: str, order: str, expected: date | None
) -> None:
    assert parse_date(text, order) == expected  # type: ignore[arg-type]


def test_numeric_spellings_follow_the_layout_order_only() -> None:
    assert "us_numeric" not in spellings(date(2015, 7, 7), "DMY")
    assert "uk_dotted" not in spellings(date(2015, 7, 7), "MDY")


def test_a_printout_in_another_locale_reads_its_numeric_dates_in_that_locales_order() -> None:
    from tests.unit.ingest.test_pdf_synthetic import HOLOGIC_LINES, build_pdf

    us = [
        line.replace("03 April 2020", "April 3, 2020").replace("01 March 1950", "03/04/1950") for line in HOLOGIC_LINES
    ]
    report = parse_file_reports(build_pdf([us]), "x.pdf", ParseLimits())[0]
    assert report.exam_date == date(2020, 4, 3)
    assert report.patient.birth_date == date(1950, 3, 4)  # US printout: month first
    uk = [line.replace("01 March 1950", "03/04/1950") for line in HOLOGIC_LINES]
    assert parse_file_reports(build_pdf([uk]), "x.pdf", ParseLimits())[0].patient.birth_date == date(1950, 4, 3)


@pytest.mark.parametrize(
    ("pattern", "label", "verdict"),
    [
        (r"^Troch\b", "Trochanteric Area", "quarantined"),  # a site word no synonym places: not dropped
        (r"^L1-L4\b", "L1-L4 (adj)", "quarantined"),
        (r"^Neck\b", "Upper Neck", "quarantined"),
        (r"^L1,L3\b", "L1, L3", "correct"),  # a non-contiguous set is no site, spelled either way
    ],
)
def test_a_row_naming_a_site_we_cannot_place_refuses_the_file(pattern: str, label: str, verdict: str) -> None:
    if not PDFS:
        skip_or_fail("../shared/samples not present")
    import re

    from tests.unit.ingest.spellings import Rewrite, _table_lines

    def relabel(lines: list[str], template: object, truth: object) -> bool:
        changed = False
        for i in _table_lines(lines, template):  # type: ignore[arg-type]
            updated = re.sub(pattern, label, lines[i])
            changed, lines[i] = changed or updated != lines[i], updated
        return changed

    rewrite: Rewrite = relabel  # type: ignore[assignment]
    seen = 0
    for sample in PDFS:
        truth = truth_of(sample)
        data = rewritten(sample, truth, rewrite)
        if data is None:
            continue
        seen += 1
        outcome = judge(data, [truth])
        assert outcome.verdict == verdict, f"{sample.name}: {outcome.detail}"
        if verdict == "quarantined":
            assert outcome.detail.startswith("malformed_results") and "fewer sites" in outcome.detail
    assert seen
