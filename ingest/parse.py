"""The single entry point of ingestion: bytes in, a ParsedReport or a typed ParseError out.

The format is sniffed from the bytes, never from the file name (which is only quoted in
messages and may be anything, even `..%2f..%2fetc.dcm`). Every exception a reading library lets
escape is turned into a typed error here (`ingest.boundary`), and what was read is checked for
plausibility (`monitor.plausibility`) before anyone may store it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from ingest.boundary import guarded
from ingest.dicom import looks_like_dicom, parse_dicom_reports
from ingest.errors import EmptyFile, NotDicom, TooLarge, UnsupportedLayout
from ingest.ocr.images import image_kind
from ingest.plausible import check_report
from ingest.report import ParsedReport

if TYPE_CHECKING:
    from ingest.ocr.read import ScanReading


@dataclass(frozen=True)
class ParseLimits:
    """Configured ceilings: a file or a PDF bigger than this is refused, not parsed."""

    max_bytes: int = 64 * 1024 * 1024
    max_pdf_pages: int = 40
    # The caller's today, for "exam date in the future"; None skips only that check (the parsers
    # have no clock; whatever stores a report passes one).
    today: date | None = None


def _is_pdf(data: bytes) -> bool:
    # The PDF header may follow a little junk (some exporters prepend a BOM or blank line).
    return b"%PDF-" in data[:1024]


def parse_file(data: bytes, name: str, limits: ParseLimits) -> ParsedReport:
    """A file that must hold exactly one report (tests, tools); the pipeline stores every report
    of a file through `parse_file_reports`."""
    from ingest.pdf.parse import only_report

    return only_report(parse_file_reports(data, name, limits))


def parse_file_reports(data: bytes, name: str, limits: ParseLimits) -> tuple[ParsedReport, ...]:
    """Every report a file holds (a PDF of several printouts is split, `ingest.pdf.split`), each
    with its own patient, date and machine and checked for plausibility; or a ParseError for the
    whole file (one implausible report refuses the file: it is stored whole or not at all)."""
    return tuple(check_report(report, limits.today) for report in _parse(data, name, limits))


def parse_file_or_scan(data: bytes, name: str, limits: ParseLimits) -> tuple[ParsedReport, ...] | ScanReading:
    """The pipeline's entry point: a file's reports, or, for an image (PNG, JPEG, TIFF) or an
    image-only PDF, what OCR read from it, which a person confirms before anything is stored
    (`services.scans`)."""
    if image_kind(data) is not None and len(data) <= limits.max_bytes:
        return _scan(data, limits)
    try:
        return parse_file_reports(data, name, limits)
    except UnsupportedLayout:
        if _is_pdf(data) and not looks_like_dicom(data) and not _has_text(data, limits):
            return _scan(data, limits)
        raise


def _has_text(data: bytes, limits: ParseLimits) -> bool:
    from ingest.pdf.text import read_pdfium

    text = read_pdfium(data, limits.max_pdf_pages)
    return any(line.strip() for page in text.pages for line in page)


def _scan(data: bytes, limits: ParseLimits) -> ScanReading:
    from ingest.ocr.read import read_scan  # lazy: Pillow and the OCR engine load only for scans

    return guarded("image", lambda: read_scan(data, limits.max_pdf_pages))


def _parse(data: bytes, name: str, limits: ParseLimits) -> tuple[ParsedReport, ...]:
    size = len(data)
    if size == 0:
        raise EmptyFile("empty file: 0 bytes")
    if size > limits.max_bytes:
        raise TooLarge(f"file too large: {size} bytes is over the configured limit of {limits.max_bytes} bytes")
    if data.startswith(b"%PDF") or (_is_pdf(data) and not looks_like_dicom(data)):
        from ingest.pdf.parse import parse_pdf_reports  # lazy: the PDF libraries load only for PDFs

        return guarded("PDF", lambda: parse_pdf_reports(data, name, max_pages=limits.max_pdf_pages))
    if looks_like_dicom(data):
        return guarded("DICOM", lambda: parse_dicom_reports(data, name, max_pdf_pages=limits.max_pdf_pages))
    raise NotDicom("not a DICOM file or PDF: unrecognised format")
