"""The shared sample PDFs reprinted with the other spellings their vendors print: the sample's text
(as pdfium reads it) rewritten along one axis (exam/birth date spelling, BMD unit, decimal
comma, site label), printed again as a PDF with reportlab, and optionally wrapped in the
Encapsulated PDF envelope of the shared DICOM sample. Shared by the tests and the variants table."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from dxa import pdf_print
from ingest.dates import parse_date
from ingest.pdf.date_order import pages_date_order
from ingest.pdf.sniff import choose_template
from ingest.pdf.template import DATE_SPELLINGS, Template, builtin_templates
from ingest.pdf.text import PdfText, read_pdfium
from tests.unit.ingest.test_shared_samples import SAMPLES

ENCAPSULATED = SAMPLES / "single" / "encapsulated" / "ge_spine_report_epdf.dcm"
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip
_GERMAN = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
           "November", "Dezember"]  # fmt: skip
_SPANISH = ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
            "noviembre", "diciembre"]  # fmt: skip


def spellings(when: date, order: str) -> dict[str, str]:
    """The spellings of `when` a vendor's software prints in the locales it ships. Numeric
    day/month spellings only in the layout's own order (the template's `date_order`)."""
    d, m, y, month = when.day, when.month, when.year, _MONTHS[when.month - 1]
    out = {
        "us_long": f"{month} {d}, {y}",
        "us_short": f"{month[:3]} {d}, {y}",
        "uk_long": f"{d} {month} {y}",
        "uk_abbrev_dash": f"{d:02d}-{month[:3]}-{y}",
        "iso": f"{y}-{m:02d}-{d:02d}",
        "iso_unpadded": f"{y}-{m}-{d}",
        "chinese": f"{y}年{m}月{d}日",
        "slash_ymd": f"{y}/{m:02d}/{d:02d}",
        "german": f"{d}. {_GERMAN[m - 1]} {y}",
        "spanish": f"{d} de {_SPANISH[m - 1]} de {y}",
    }  # fmt: skip
    if order == "DMY":
        out |= {"uk_dotted": f"{d:02d}.{m:02d}.{y}", "uk_slash": f"{d:02d}/{m:02d}/{y}"}
    elif order == "MDY":
        out |= {"us_numeric": f"{m:02d}/{d:02d}/{y}", "us_numeric_unpadded": f"{m}/{d}/{y}"}
    return out


def sample_text(sample: Path) -> tuple[PdfText, Template]:
    text = read_pdfium(sample.read_bytes(), 40)
    template = choose_template(text, builtin_templates())
    assert template is not None, sample
    return text, template


def _replace_field(lines: list[str], template: Template, name: str, new: str) -> bool:
    pattern = template.fields.get(name)
    if pattern is None:
        return False
    for i, line in enumerate(lines):
        match = pattern.search(line)
        if match:
            lines[i] = line[: match.start("v")] + new + line[match.end("v") :]
            return True
    return False


def _table_lines(lines: list[str], template: Template) -> range:
    start = next((i for i, line in enumerate(lines) if template.table.start.search(line)), len(lines))
    stop = next(
        (i for i in range(start + 1, len(lines)) if any(e.search(lines[i]) for e in template.table.end)), len(lines)
    )
    return range(start, stop)


Rewrite = Callable[[list[str], Template, dict[str, Any]], bool]


def date_rewrite(field: str, spelling: str) -> Rewrite:
    def rewrite(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
        value = truth.get(field)
        if not value:
            return False
        # A "locale" layout prints numeric dates in the order its own report proves (a UK Hologic
        # sample day first, a US GE sample month first).
        order = pages_date_order(template, [lines])
        chosen = spellings(date.fromisoformat(value), order).get(spelling)
        return chosen is not None and _replace_field(lines, template, field, chosen)

    return rewrite


def decimal_comma(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    rows = _table_lines(lines, template)
    for i in rows:
        lines[i] = re.sub(r"(?<![\d.,])(-?\d+)\.(\d+)(?![\d.])", r"\1,\2", lines[i])
    return bool(rows)


def unit_g_cm2_ascii(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    changed = False
    for i, line in enumerate(lines):
        if "g/cm²" in line:
            lines[i], changed = line.replace("g/cm²", "g/cm2"), True
    return changed


def unit_mg_cm2(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    """BMD printed in mg/cm² (header and values): the parser must convert, never take 760 g/cm²."""
    rows = _table_lines(lines, template)
    header = next((i for i in rows if re.search(r"(?<![m\w])g/cm", lines[i])), None)
    if header is None:
        return False
    lines[header] = re.sub(r"(?<![m\w])g/cm", "mg/cm", lines[header], count=1)
    for m in truth["measurements"]:
        printed = f"{m['bmd']:.3f}"
        for i in rows:
            tokens = lines[i].split()
            if printed in tokens[1:]:
                tokens[tokens.index(printed, 1)] = str(round(m["bmd"] * 1000))
                lines[i] = " ".join(tokens)
    return True


LABEL_SYNONYMS = {
    r"^Neck\b": "Femoral Neck",
    r"^Total(?= (?:Left|Right|Mean|\d))": "Total Hip",
    r"^Total$": "Total Hip",
    r"^Troch\b": "Trochanter",
    r"^Inter\b": "Intertrochanter",
    r"^L(\d)-L(\d)\b": r"L\1 - L\2",
    r"^L(\d) - L(\d)\b": r"L\1-L\2",
    r"^(?:腰椎 )?L(\d)-L(\d)": r"L\1-\2",
    r"^左侧全髋": "左侧全髋部",
    r"^左侧股骨颈": "左股骨颈",
}


def label_synonyms(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    changed = False
    for i in _table_lines(lines, template):
        for pattern, new in LABEL_SYNONYMS.items():
            updated = re.sub(pattern, new, lines[i])
            if updated != lines[i]:
                lines[i], changed = updated, True
                break
    return changed


ABBREVIATIONS = {
    r"^Neck\b": "Fem. Neck",
    r"^Troch\b": "Troch.",
    r"^Trochanter\b": "Greater Trochanter",
    r"^Inter\b": "Int.",
    r"^Intertrochanter\b": "Intertrochanteric",
    r"^Ward's\b": "Ward's Triangle",
    r"^L(\d)-L(\d)\b": r"Lumbar Spine L\1 to L\2",
    r"^L(\d) - L(\d)\b": r"L\1–L\2",
}


def label_abbreviations(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    """Row labels as other software versions and locales abbreviate or spell them out."""
    changed = False
    for i in _table_lines(lines, template):
        for pattern, new in ABBREVIATIONS.items():
            updated = re.sub(pattern, new, lines[i])
            if updated != lines[i]:
                lines[i], changed = updated, True
                break
    return changed


_LABEL = re.compile(r"^(\D*?)(?=\s[-−]?\d|$)")


def label_case(change: Callable[[str], str]) -> Rewrite:
    """The results table printed in capitals or small letters (heading, header and row labels)."""

    def rewrite(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
        rows = _table_lines(lines, template)
        for i in rows:
            match = _LABEL.match(lines[i])
            if match:
                lines[i] = change(match.group(1)) + lines[i][match.end() :]
        return bool(rows)

    return rewrite


def driver_spacing(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    """A print driver's spacing: tabs and no-break spaces between cells, runs of spaces."""
    rows = _table_lines(lines, template)
    for n, i in enumerate(rows):
        lines[i] = re.sub(r" +", ("\t", "\u00a0", "   ")[n % 3], lines[i])
    return bool(rows)


def driver_banner(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    """A print server's banner above and footer below the page."""
    lines.insert(0, "Printed by PDF Writer 2026-12-02 10:15  \\\\SERVER\\DXA-Queue  job 4711")
    lines.append("Page 1 of 1 -- printed 2026-12-02 10:15:07")
    return True


def unicode_dashes(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    """What word processors and some PDF producers print for "-": minus signs before values,
    hyphens in headers, en dashes in ranges."""
    rows = _table_lines(lines, template)
    for i in rows:
        line = re.sub(r"(?<![\w.])-(?=\d)", "\u2212", lines[i])
        line = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z ])", "\u2010", line)
        lines[i] = re.sub(r"(?<=L\d)-(?=L?\d)", "\u2013", line)
    return bool(rows)


def score_headers(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    """ "T score"/"Z score" (no hyphen) in the table header, as other software versions print it."""
    changed = False
    for i in _table_lines(lines, template):
        updated = re.sub(r"\b([TZ])-\s*(score)", r"\1 \2", lines[i], flags=re.IGNORECASE)
        changed, lines[i] = changed or updated != lines[i], updated
    return changed


def axes() -> dict[str, Rewrite]:
    out: dict[str, Rewrite] = {}
    names = set(spellings(date(2015, 7, 7), "DMY")) | set(spellings(date(2015, 7, 7), "MDY"))
    for name in sorted(names):
        out[f"exam_date:{name}"] = date_rewrite("exam_date", name)
        out[f"birth_date:{name}"] = date_rewrite("birth_date", name)
    out["decimal_comma"] = decimal_comma
    out["unit_g_cm2_ascii"] = unit_g_cm2_ascii
    out["unit_mg_cm2"] = unit_mg_cm2
    out["label_synonyms"] = label_synonyms
    out["label_abbreviations"] = label_abbreviations
    out["labels_upper_case"] = label_case(str.upper)
    out["labels_lower_case"] = label_case(str.lower)
    out["driver_spacing"] = driver_spacing
    out["driver_banner"] = driver_banner
    out["unicode_dashes"] = unicode_dashes
    out["score_headers"] = score_headers
    out["decimal_comma+unit_mg_cm2"] = lambda lines, t, truth: (
        unit_mg_cm2(lines, t, truth) and decimal_comma(lines, t, truth)
    )
    return out


def print_pdf(pages: list[list[str]]) -> bytes:
    """Print lines as a PDF with reportlab (a CID font covers Latin and Chinese)."""
    return pdf_print.print_pdf(pages, size=8, left=30, top=820, leading=11)


def rewritten(sample: Path, truth: dict[str, Any], rewrite: Rewrite) -> bytes | None:
    """The sample reprinted with one axis rewritten, or None when the axis does not apply."""
    text, template = sample_text(sample)
    pages = [list(page) for page in text.pages]
    if not any(rewrite(lines, template, truth) for lines in pages):
        return None
    return print_pdf(pages)


def encapsulated(pdf: bytes, patient_id: str) -> bytes:
    """`pdf` in the shared Encapsulated PDF sample's DICOM envelope, the header naming `patient_id`."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(io.BytesIO(ENCAPSULATED.read_bytes()))
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    if "EncapsulatedDocumentLength" in ds:
        ds.EncapsulatedDocumentLength = len(pdf)
    ds.PatientID = patient_id
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# --------------------------------------------------------------------------- locale of numeric dates

_ANY_DATE = re.compile(DATE_SPELLINGS)
_METRIC = (
    (re.compile(r"(\d+(?:\.\d+)?)\s*cm\b"), lambda v: f"{v / 2.54:.1f} in"),
    (re.compile(r"(\d+(?:\.\d+)?)\s*kg\b"), lambda v: f"{v / 0.45359237:.1f} lb"),
)
_IMPERIAL = (
    (re.compile(r"(\d+(?:\.\d+)?)\s*in\b\.?"), lambda v: f"{v * 2.54:.1f} cm"),
    (re.compile(r"(\d+(?:\.\d+)?)\s*lbs?\b\.?"), lambda v: f"{v * 0.45359237:.1f} kg"),
)
_BODY = re.compile(r"height|weight", re.IGNORECASE)


def numeric_dates_everywhere(order: str, sep: str = "/") -> Rewrite:
    """Every date the report prints (fields, trend rows, analysis lines) as a number in `order`,
    as the vendor's software prints them with numeric regional settings: no month in words left."""

    def rewrite(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
        if template.date_order == "YMD":
            return False
        source = pages_date_order(template, [lines])

        def numeric(match: re.Match[str]) -> str:
            when = parse_date(match.group(), source)
            if when is None:
                return match.group()
            first, second = (when.month, when.day) if order == "MDY" else (when.day, when.month)
            return f"{first:02d}{sep}{second:02d}{sep}{when.year}"

        before = list(lines)
        lines[:] = [_ANY_DATE.sub(numeric, line) for line in lines]
        return lines != before

    return rewrite


def without_scan_id(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
    """Scan IDs of another numbering (no date inside), as a site's own scheme prints them."""
    pattern = template.fields.get("scan_id_date")
    if pattern is None:
        return False
    changed = False
    for i, line in enumerate(lines):
        for match in list(pattern.finditer(line))[::-1]:
            line = line[: match.start("mm")] + "000000" + line[match.end("yy") :]
            changed = True
        lines[i] = line
    return changed


def body_units(system: str) -> Rewrite:
    """Height and weight in US units ("in", "lb") or metric ("cm", "kg")."""
    rules = _METRIC if system == "us" else _IMPERIAL

    def rewrite(lines: list[str], template: Template, truth: dict[str, Any]) -> bool:
        changed = False
        for i, line in enumerate(lines):
            if not _BODY.search(line):
                continue
            for pattern, convert in rules:
                line = pattern.sub(_converted(convert), line)
            changed = changed or line != lines[i]
            lines[i] = line
        return changed

    return rewrite


def _converted(convert: Callable[[float], str]) -> Callable[[re.Match[str]], str]:
    return lambda match: convert(float(match.group(1)))


def rewritten_all(sample: Path, truth: dict[str, Any], rewrites: list[Rewrite]) -> bytes:
    """The sample reprinted with every rewrite applied in turn (each may or may not apply)."""
    text, template = sample_text(sample)
    pages = [list(page) for page in text.pages]
    for rewrite in rewrites:
        for lines in pages:
            rewrite(lines, template, truth)
    return print_pdf(pages)
