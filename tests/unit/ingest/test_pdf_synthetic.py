"""PDF parsing on PDFs built here: limits, negatives, and adding a layout by template alone."""

from __future__ import annotations

import tomllib
from datetime import date

import pytest

from ingest.errors import (
    MalformedResults,
    MissingField,
    NotDxaResult,
    ParseError,
    TooLarge,
    UnreadableFile,
    UnsupportedLayout,
)
from ingest.pdf import parse_pdf
from ingest.pdf.parse import parse_pdf_text
from ingest.pdf.template import TemplateError, builtin_templates, template_from_mapping
from ingest.pdf.text import PdfText


def build_pdf(pages: list[list[str]]) -> bytes:
    """A minimal text PDF (Helvetica, one Tj per line), enough for pdfium and pdfplumber."""
    n = len(pages)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{4 + 2 * i} 0 R".encode() for i in range(n))
        + f"] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, lines in enumerate(pages):
        body = []
        for j, line in enumerate(lines):
            text = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            body.append(f"BT /F1 10 Tf 40 {800 - 14 * j} Td ({text}) Tj ET")
        stream = "\n".join(body).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for k, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{k} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


HOLOGIC_LINES = [
    "Name: Test, Alice Sex: Female Height: 160.0 cm",
    "Patient ID: ZZ000123 Ethnicity: White Weight: 60.0 kg",
    "DOB: 01 March 1950 Referring Physician: Nobody Age: 70",
    "Scan Date: 03 April 2020 ID: A0403200D",
    "Scan Type: f Right Hip",
    "Analysis: 03 April 2020 10:00 Version 13.6.0.5",
    "Model: Discovery W (S/N 81234)",
    "DXA Results Summary:",
    "Region Area (cm2) BMC (g) BMD (g/cm2) T - score PR (%) Z - score AM (%)",
    "Neck 4.70 3.60 0.766 -1.0 88 0.2 103",
    "Troch 11.00 7.00 0.636 -0.9 89 0.1 101",
    "Total 33.00 29.00 0.879 -0.6 93 0.4 106",
    "WHO Classification: Osteopenia",
    "* Denotes significance at 95% confidence level, LSC is 0.026 g/cm2",
]


def test_hand_built_hologic_right_hip_takes_its_side_from_the_scan_type() -> None:
    report = parse_pdf(build_pdf([HOLOGIC_LINES]), "x.pdf")
    assert report.format == "pdf_hologic"
    assert report.scan_type == "hip"
    assert report.exam_date == date(2020, 4, 3)
    assert (report.device.model, report.device.serial) == ("Discovery W", "81234")
    got = {(m.site, m.side): (m.bmd, m.t_score, m.z_score) for m in report.measurements}
    assert got == {
        ("femoral_neck", "right"): (0.766, -1.0, 0.2),
        ("trochanter", "right"): (0.636, -0.9, 0.1),
        ("total_hip", "right"): (0.879, -0.6, 0.4),
    }
    assert dict(report.extras.printed_lsc_g_cm2) == {"total_hip": 0.026}
    assert report.measurements[0].provenance == "pdf p1 line 10"


def test_hip_without_any_side_is_refused_not_guessed() -> None:
    lines = [line.replace("Right Hip", "Hip") for line in HOLOGIC_LINES]
    with pytest.raises(MissingField, match="side of the hip"):
        parse_pdf(build_pdf([lines]), "x.pdf")


def test_missing_patient_id_names_the_field_and_no_patient_data() -> None:
    lines = [line for line in HOLOGIC_LINES if not line.startswith("Patient ID")]
    with pytest.raises(MissingField, match="patient ID") as info:
        parse_pdf(build_pdf([lines]), "ZZ000123_test_alice.pdf")
    assert "ZZ000123" not in info.value.message and "Test" not in info.value.message


def test_results_table_without_a_bmd_column_is_malformed() -> None:
    lines = [line.replace("BMD (g/cm2) ", "") if line.startswith("Region") else line for line in HOLOGIC_LINES]
    with pytest.raises(MalformedResults, match="'bmd' column"):
        parse_pdf(build_pdf([lines]), "x.pdf")


def test_row_with_more_values_than_the_header_is_malformed_not_shifted() -> None:
    lines = [line.replace(" PR (%)", "") if line.startswith("Region") else line for line in HOLOGIC_LINES]
    with pytest.raises(MalformedResults, match="values but the header"):
        parse_pdf(build_pdf([lines]), "x.pdf")


def test_over_the_page_limit_is_too_large() -> None:
    data = build_pdf([["page"]] * 3)
    with pytest.raises(TooLarge, match="3 pages, over the limit of 2"):
        parse_pdf(data, "x.pdf", max_pages=2)
    with pytest.raises(TooLarge):
        parse_pdf(build_pdf([["page"]] * 41), "x.pdf")


def test_damaged_bytes_are_unreadable() -> None:
    data = build_pdf([HOLOGIC_LINES])
    with pytest.raises(UnreadableFile):
        parse_pdf(b"%PDF-1.4\n" + b"\x00garbage" * 10, "x.pdf")
    with pytest.raises((UnreadableFile, MalformedResults, MissingField, NotDxaResult)):
        parse_pdf(data[: len(data) // 3], "x.pdf")


def test_unknown_dxa_layout_is_unsupported_and_says_what_was_recognised() -> None:
    lines = [
        "Medilink Medix DR bone densitometry report",
        "Patient: ZZ999 Exam 12.05.2021",
        "Site BMD (g/cm2) T-score Z-score",
        "L1-L4 0.912 -1.2 -0.4",
        "Neck 0.701 -1.5 -0.6",
    ]
    with pytest.raises(UnsupportedLayout) as info:
        parse_pdf(build_pdf([lines]), "x.pdf")
    message = info.value.message
    assert "Medilink" in message and "g/cm²" in message and "2 site result row(s)" in message
    assert "ZZ999" not in message


def test_questionnaire_is_not_a_dxa_report() -> None:
    lines = [
        "Bone Density Screening Form",
        "1. Have you had a DEXA scan before? [X] Yes [ ] No",
        "Patient signature: ________",
    ]
    with pytest.raises(NotDxaResult, match="not a DXA report: questionnaire"):
        parse_pdf(build_pdf([lines]), "x.pdf")


def test_empty_text_layer_is_unsupported_not_silently_empty() -> None:
    with pytest.raises(UnsupportedLayout, match="no text layer"):
        parse_pdf(build_pdf([[]]), "x.pdf")


# --- adding a layout is a template, not code -----------------------------------------------------

NEW_TEMPLATE = r"""
name = "pdf_acme_densito"
description = "ACME Densito report"
date_order = "DMY"

[detect]
all = ['^ACME Densito\b']

[fields]
patient_id = 'Patient No\.\s*(?P<v>\S+)'
exam_date = 'Exam:\s*(?P<v>\d{2}\.\d{2}\.\d{4})'

[device]
manufacturer = "ACME"
lines = ['^ACME Densito (?P<model>\S+) #(?P<serial>\w+)']

[sides]
words = { "sin." = "left", "dx." = "right" }

[labels]
"col. fem." = "femoral_neck"
"hanche totale" = "total_hip"
"rachis L1-L4" = "L1-L4"

[table]
start = '^Resultats'
end = ['^Fin']
columns = [
  { key = "bmd", header = 'DMO', unit = "mg/cm2" },
  { key = "t", header = 'T' },
  { key = "z", header = 'Z', optional = true },
]
"""

ACME_LINES = [
    "ACME Densito X1 #SN42 - rapport",
    "Patient No. ZZ77 Exam: 03.04.2021",
    "Resultats",
    "Region DMO T",
    "rachis L1-L4 912 -1,2",
    "col. fem. sin. 701 -1,5",
    "hanche totale sin. 823 -1,1",
    "Fin",
]


def acme_template() -> list:  # type: ignore[type-arg]
    return [template_from_mapping(tomllib.loads(NEW_TEMPLATE), "acme.toml")]


def test_a_tiny_new_template_reads_a_synthetic_text() -> None:
    text = PdfText(pages=(tuple(ACME_LINES),))
    with pytest.raises(ParseError):  # unknown to the built-in templates
        parse_pdf_text(text)
    report = parse_pdf_text(text, acme_template())
    assert report.format == "pdf_acme_densito"
    assert report.exam_date == date(2021, 4, 3)  # day-first, as the template says
    assert (report.device.manufacturer, report.device.model, report.device.serial) == ("ACME", "X1", "SN42")
    got = {(m.site, m.side): (m.bmd, m.t_score, m.z_score) for m in report.measurements}
    assert got == {
        ("L1-L4", None): (0.912, -1.2, None),  # mg/cm² converted, decimal comma read, no Z column
        ("femoral_neck", "left"): (0.701, -1.5, None),
        ("total_hip", "left"): (0.823, -1.1, None),
    }
    assert report.scan_type == "mixed"


def test_the_new_template_reads_the_same_layout_from_real_pdf_bytes() -> None:
    from ingest.pdf.text import read_pdfium

    text = read_pdfium(build_pdf([ACME_LINES]), 40)
    report = parse_pdf_text(text, acme_template())
    assert [(m.site, m.side, m.bmd) for m in report.measurements][1] == ("femoral_neck", "left", 0.701)
    assert report.measurements[1].provenance == "pdf p1 line 6"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda t: t.replace("(?P<v>\\S+)", "(\\S+)"), "lacks the named group"),
        (lambda t: t.replace('"dx." = "right"', '"dx." = "dexter"'), "not sides"),
        (lambda t: t + '\ncolour = "red"\n', "unknown key"),
        (lambda t: t.replace('key = "bmd"', 'key = "dmo"'), "no 'bmd' column"),
        (lambda t: t.replace('date_order = "DMY"', 'date_order = "guess"'), "date_order"),
    ],
)
def test_template_mistakes_fail_at_load_time(change, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TemplateError, match=error):
        template_from_mapping(tomllib.loads(change(NEW_TEMPLATE)), "acme.toml")


def test_builtin_templates_have_distinct_names() -> None:
    names = [t.name for t in builtin_templates()]
    assert len(names) == len(set(names)) >= 4
