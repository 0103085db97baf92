"""PDF report → ParsedReport: pdfium text pass, template sniff, one generic engine."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.pdf.engine import apply_template
from ingest.pdf.sniff import choose_template, classify_unmatched
from ingest.pdf.template import Template, builtin_templates
from ingest.pdf.text import PdfText, read_pdfium, read_pdfplumber
from ingest.report import ParsedReport


def parse_pdf(data: bytes, name: str, *, max_pages: int = 40) -> ParsedReport:
    """Parse a DXA PDF report. `name` is accepted for the caller's messages, but is never put in
    ours: report file names often carry the patient's name or ID."""
    del name
    text = read_pdfium(data, max_pages)
    template = choose_template(text, builtin_templates())
    if template is None:
        raise classify_unmatched(text)
    if template.text_source == "pdfplumber":
        text = read_pdfplumber(data, max_pages)
    return apply_template(template, text)


def parse_pdf_text(text: PdfText, templates: Sequence[Template] | None = None) -> ParsedReport:
    """The same, from text already read (tests feed pdfplumber text or synthetic lines)."""
    chosen = choose_template(text, builtin_templates() if templates is None else templates)
    if chosen is None:
        raise classify_unmatched(text)
    return apply_template(chosen, text)
