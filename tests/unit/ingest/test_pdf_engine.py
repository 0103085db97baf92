"""Small pieces of the PDF engine: dates by layout order, labels, value tokens."""

from __future__ import annotations

from datetime import date

import pytest

from ingest.dates import parse_date
from ingest.pdf.rows import Label, resolve_label, resolve_suffix
from ingest.pdf.template import builtin_templates


def _template(name: str):  # type: ignore[no-untyped-def]
    return next(t for t in builtin_templates() if t.name == name)


@pytest.mark.parametrize(
    ("text", "order", "expected"),
    [
        ("03/04/2016", "DMY", date(2016, 4, 3)),
        ("03/04/2016", "MDY", date(2016, 3, 4)),
        ("13/04/2016", "MDY", None),  # never flipped to fit the value
        ("19.11.2019", "DMY", date(2019, 11, 19)),
        ("25 July 2014", "MDY", date(2014, 7, 25)),  # a month word is unambiguous
        ("December 19, 2014", "DMY", date(2014, 12, 19)),
        ("2019年03月12日", "DMY", date(2019, 3, 12)),
        ("2016 03 18", "YMD", date(2016, 3, 18)),  # pdfium's reading of 2016年03月18日
        ("03/04/16", "DMY", None),  # two-digit years refused
        ("31/02/2016", "DMY", None),
    ],
)
def test_dates_follow_the_layout_order(text: str, order: str, expected: date | None) -> None:
    assert parse_date(text, order) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("template", "label", "expected"),
    [
        ("pdf_norland", "L2 - L4", Label("L2-L4", None)),
        ("pdf_ge_encore", "Neck Left", Label("femoral_neck", "left")),
        ("pdf_ge_encore", "Total Mean", Label("total_hip", "mean")),
        ("pdf_ge_encore", "Neck Diff.", None),
        ("pdf_hologic", "Right", Label(None, "right")),
        ("pdf_hologic", "|Diff.|", None),
        ("pdf_hologic", "L1,L3", None),
        ("pdf_osteosys_primus_zh", "左侧股骨颈", Label("femoral_neck", "left")),
        ("pdf_osteosys_primus_zh", "右侧全髋", Label("total_hip", "right")),
        ("pdf_osteosys_primus_zh", "腰椎 L1-L4", Label("L1-L4", None)),
        ("pdf_ge_encore", "Leftover", None),  # a side word must be a whole word in Latin labels
    ],
)
def test_labels(template: str, label: str, expected: Label | None) -> None:
    assert resolve_label(label, _template(template)) == expected


def test_lsc_site_is_the_tail_of_the_printed_region() -> None:
    ge = _template("pdf_ge_encore")
    assert resolve_suffix("AP Spine L1-L4", ge) == Label("L1-L4", None)
    assert resolve_suffix("DualFemur Total Mean", ge) == Label("total_hip", "mean")
