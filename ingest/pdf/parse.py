"""PDF report → ParsedReport: pdfium text pass, template sniff, one generic engine."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from ingest.errors import MalformedResults
from ingest.pdf.date_order import pages_date_order
from ingest.pdf.engine import apply_template
from ingest.pdf.sniff import classify_unmatched
from ingest.pdf.split import Segment, check_pages, find_segments
from ingest.pdf.template import Template, builtin_templates
from ingest.pdf.text import PdfText, read_pdfium, read_pdfplumber
from ingest.report import ParsedReport


def parse_pdf_reports(
    data: bytes, name: str, *, max_pages: int = 40, envelope_dates: Sequence[date] = ()
) -> tuple[ParsedReport, ...]:
    """Every report of a DXA PDF, each with its own patient, date and machine (`ingest.pdf.split`).
    `name` is accepted for the caller's messages, but is never put in ours: report file names often
    carry the patient's name or ID. `envelope_dates`: exam dates an envelope (an Encapsulated PDF's
    DICOM header) states, evidence for the order of numeric dates (`ingest.pdf.date_order`)."""
    del name
    text = read_pdfium(data, max_pages)
    templates = builtin_templates()
    segments = find_segments(text, templates)
    if segments is None:
        raise classify_unmatched(text)
    plumber: PdfText | None = None
    reports = []
    for segment in segments:
        source = text
        if segment.template.text_source == "pdfplumber":
            plumber = plumber or read_pdfplumber(data, max_pages)
            source = plumber
        reports.append(_read(segment, segment.text(source), text, templates, envelope_dates))
    return tuple(reports)


def _read(
    segment: Segment, source: PdfText, text: PdfText, templates: Sequence[Template], envelope_dates: Sequence[date]
) -> ParsedReport:
    """One report's pages read by its template, then every page of it checked against it."""
    report = apply_template(segment.template, source, first_page=segment.first + 1, envelope_dates=envelope_dates)
    order = pages_date_order(segment.template, segment.text(text).pages, envelope_dates=envelope_dates)
    check_pages(text, segment, report.patient.patient_id, templates, order)
    return report


def parse_pdf(data: bytes, name: str, *, max_pages: int = 40) -> ParsedReport:
    """A PDF that must hold exactly one report (a file of several is refused here; callers that
    store several use `parse_pdf_reports`)."""
    return only_report(parse_pdf_reports(data, name, max_pages=max_pages))


def parse_pdf_text(text: PdfText, templates: Sequence[Template] | None = None) -> ParsedReport:
    """The same, from text already read (tests feed pdfplumber text or synthetic lines)."""
    return only_report(parse_pdf_text_reports(text, templates))


def parse_pdf_text_reports(text: PdfText, templates: Sequence[Template] | None = None) -> tuple[ParsedReport, ...]:
    chosen = builtin_templates() if templates is None else tuple(templates)
    segments = find_segments(text, chosen)
    if segments is None:
        raise classify_unmatched(text)
    reports = []
    for segment in segments:
        reports.append(_read(segment, segment.text(text), text, chosen, ()))
    return tuple(reports)


def only_report(reports: Sequence[ParsedReport]) -> ParsedReport:
    if len(reports) != 1:
        raise MalformedResults(f"this file holds {len(reports)} reports where one was expected")
    return reports[0]
