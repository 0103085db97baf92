"""The one engine that applies a layout template to a PDF's text lines.

Identity fields (patient, exam date, machine) come from the template's field patterns over the
whole report; each page's results table is read by `ingest.pdf.results_table`, its trend tables
by `ingest.pdf.trend_table`, row labels and value cells by `ingest.pdf.rows`. Anything doubtful
raises: a value on the wrong site or side would silently corrupt a patient's trend.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from ingest.dates import parse_date
from ingest.errors import MalformedResults, MissingField
from ingest.pdf.date_order import report_date_order
from ingest.pdf.readings import Readings, merge_history
from ingest.pdf.results_table import parse_results_table
from ingest.pdf.rows import resolve_suffix
from ingest.pdf.template import Template
from ingest.pdf.text import PdfText
from ingest.pdf.trend_table import parse_trend_table
from ingest.report import (
    DeviceIdentity,
    ParsedReport,
    PatientInfo,
    SiteMeasurement,
    VendorExtras,
)
from ingest.vocabulary import FOREARM_SITES, HIP_SITES, canonical_side, parse_decimal

_LUMBAR_RANGE = re.compile(r"^L[1-5]-L[1-5]$")
_SEX = {"female": "F", "f": "F", "女": "F", "male": "M", "m": "M", "男": "M"}


def _field(template: Template, text: str, name: str) -> str | None:
    pattern = template.fields.get(name)
    match = pattern.search(text) if pattern else None
    return (match["v"].strip() or None) if match else None


def _metadata_field(template: Template, metadata: dict[str, str], name: str) -> str | None:
    pattern = template.metadata_fields.get(name)
    if pattern is None:
        return None
    for value in metadata.values():
        match = pattern.search(value)
        if match:
            return match["v"].strip() or None
    return None


def _side_in(template: Template, text: str) -> str | None:
    for pattern in template.side_context:
        match = pattern.search(text)
        if match:
            side = canonical_side(match["side"])
            if side:
                return side
    return None


def _scan_type(measurements: Iterable[SiteMeasurement]) -> str:
    kinds: set[str] = set()
    hip_sides: set[str | None] = set()
    for m in measurements:
        if m.site.startswith("L"):
            kinds.add("spine")
        elif m.site in HIP_SITES:
            kinds.add("hip")
            hip_sides.add(m.side)
        elif m.site in FOREARM_SITES:
            kinds.add("forearm")
        elif m.site == "total_body":
            kinds.add("total_body")
    if len(kinds) != 1:
        return "mixed"
    kind = kinds.pop()
    if kind == "hip" and len(hip_sides) > 1:
        return "dual_hip"
    return kind


def _analysed_range_first(measurements: Iterable[SiteMeasurement]) -> tuple[SiteMeasurement, ...]:
    """Lumbar ranges widest first, then the rest in printed order: `ParsedReport.vertebral_set`
    takes the first range, and the widest printed range is the analysed set (L1-L4 rather than the
    L1-L2 that Hologic and GE print first)."""
    items = list(measurements)

    def width(m: SiteMeasurement) -> int:
        return int(m.site[-1]) - int(m.site[1]) if _LUMBAR_RANGE.match(m.site) else -1

    ranges = sorted((m for m in items if width(m) > 0), key=width, reverse=True)
    return tuple(ranges + [m for m in items if width(m) <= 0])


def _default_lsc_site(measurements: dict[tuple[str, str | None], SiteMeasurement]) -> str | None:
    """The site a printed LSC without a site belongs to: the page's trended region."""
    sites = {site for site, _ in measurements}
    for preferred in ("L1-L4", "total_hip", "femoral_neck", "radius_33", "total_body"):
        if preferred in sites:
            return preferred
    ranges = sorted((s for s in sites if "-" in s), key=lambda s: int(s[-1]) - int(s[1]), reverse=True)
    return ranges[0] if ranges else None


def apply_template(
    template: Template,
    text: PdfText,
    *,
    first_page: int = 1,
    envelope_dates: Iterable[date] = (),
    identity_optional: bool = False,
) -> ParsedReport:
    """One report's pages; `first_page` is the file page number of its first page, so that every
    value's provenance names the page of the file it was read from. `envelope_dates` are exam dates
    an envelope states (an Encapsulated PDF's DICOM header): evidence for the day/month order.
    `identity_optional` (OCR of a scan, which a person confirms) reads the rest of a page whose
    patient ID could not be read, with an empty ID (and a machine line it could not read with an
    empty model): the reviewer types it, the page is never attached to anyone before."""
    joined_pages = ["\n".join(lines) for lines in text.pages]
    full = "\n".join(joined_pages)
    what = template.description

    patient_id = _field(template, full, "patient_id")
    if not patient_id and identity_optional:
        patient_id = ""
    elif not patient_id:
        raise MissingField(f"patient ID: not found in the {what} text")
    raw_date = _field(template, full, "exam_date")
    if not raw_date:
        raise MissingField(f"exam date: not found in the {what} text")
    # The day/month order is proved from this report's own text (word dates, a day over 12, the scan
    # ID, units), never guessed from one number's size (`ingest.pdf.date_order`).
    date_order = report_date_order(template, full, raw_date, envelope_dates=envelope_dates)
    exam_date = parse_date(raw_date, date_order)
    if exam_date is None:
        raise MissingField(f"exam date: the {what} date could not be read as a complete date")

    device = None
    for pattern in template.device.lines:
        match = pattern.search(full)
        if match:
            serial = match["serial"] if "serial" in pattern.groupindex else None
            device = (match["model"].strip(), serial.strip() if serial else None)
            break
    if device is None and identity_optional:
        device = ("", None)  # a scan's reviewer reads the machine off the page
    elif device is None:
        raise MissingField(f"device model: no device line found in the {what} text")

    birth_raw = _field(template, full, "birth_date")
    name = None
    name_pattern = template.fields.get("name")
    name_match = name_pattern.search(full) if name_pattern else None
    if name_match and "v" in name_match.groupdict():
        name = name_match["v"].strip() or None
    elif name_match:
        name = f"{name_match['family'].strip()}^{name_match['given'].strip()}".upper()
    sex_raw = _field(template, full, "sex")
    patient = PatientInfo(
        patient_id=patient_id,
        name=name,
        birth_date=parse_date(birth_raw, date_order) if birth_raw else None,
        sex=_SEX.get(sex_raw.lower()) if sex_raw else None,
    )

    ctx = Readings(template=template, exam_date=exam_date, measurements={}, history=[], notes=[], date_order=date_order)
    doc_side = _side_in(template, full)
    found_table = False
    for page_no, (lines, page_text) in enumerate(zip(text.pages, joined_pages, strict=True), start=first_page):
        page_side = _side_in(template, page_text) or doc_side
        found_table = parse_results_table(ctx, page_no, lines, page_side) or found_table
        for spec in template.history:
            parse_trend_table(ctx, spec, page_no, lines, page_side)
    if not found_table:
        raise MalformedResults(f"{what}: the results table heading was not found")
    if not ctx.measurements:
        raise MalformedResults(f"{what}: the results table holds no readable BMD rows")

    lsc: dict[str, float] = {}
    for pattern in template.lsc:
        for match in pattern.finditer(full):
            value = parse_decimal(match["v"])
            site_label = match["site"] if "site" in pattern.groupindex else None
            resolved = resolve_suffix(site_label, template) if site_label else None
            site = resolved.site if resolved else _default_lsc_site(ctx.measurements)
            if value is not None and site and site not in lsc:
                lsc[site] = value

    def field(name: str) -> str | None:
        return _field(template, full, name) or _metadata_field(template, text.metadata, name)

    return ParsedReport(
        format=template.name,
        patient=patient,
        exam_date=exam_date,
        device=DeviceIdentity(
            manufacturer=template.device.manufacturer,
            model=device[0],
            serial=device[1],
            software_version=field("software_version"),
        ),
        scan_type=_scan_type(ctx.measurements.values()),
        measurements=_analysed_range_first(ctx.measurements.values()),
        accession=field("accession"),
        scan_mode=field("scan_mode"),
        analysis_protocol=field("analysis_protocol"),
        extras=VendorExtras(
            history=merge_history(ctx.history),
            printed_lsc_g_cm2=tuple(lsc.items()),
            reference_database=field("reference_database"),
            notes=tuple(ctx.notes),
        ),
    )
