"""DICOM result files: which vendor layout a dataset carries, and its parser.

Routing is by content, never by file name: the SOP class first (Enhanced SR, Encapsulated
PDF), then where results hide in image objects (Hologic private block, GE ImageComments XML).
A readable image with none of these is an image, not a result.
"""

from __future__ import annotations

import warnings

from ingest.dicom import header as h
from ingest.dicom.encapsulated import parse_encapsulated_pdf
from ingest.dicom.ge_sr import parse_ge_sr
from ingest.dicom.ge_xml import parse_ge_xml, results_xml
from ingest.dicom.hologic import parse_hologic
from ingest.dicom.hologic_blob import find_results_by_content, find_results_element
from ingest.dicom.read import DICOM_READ_ERRORS, looks_like_dicom, read_dicom
from ingest.errors import MalformedResults, NotDxaResult, UnreadableFile
from ingest.report import ParsedReport

__all__ = ["looks_like_dicom", "parse_dicom", "parse_dicom_reports"]


def parse_dicom(data: bytes, name: str, *, max_pdf_pages: int = 40) -> ParsedReport:
    """A DICOM file that must hold exactly one report."""
    reports = parse_dicom_reports(data, name, max_pdf_pages=max_pdf_pages)
    if len(reports) != 1:
        raise MalformedResults(f"this file holds {len(reports)} reports where one was expected")
    return reports[0]


def parse_dicom_reports(data: bytes, name: str, *, max_pdf_pages: int = 40) -> tuple[ParsedReport, ...]:
    """Every report of a DICOM file: one, except an Encapsulated PDF whose PDF holds several."""
    with warnings.catch_warnings():
        # pydicom quotes element values (names, IDs, UIDs) in its warnings; none may be printed.
        warnings.simplefilter("ignore")
        ds = read_dicom(data)
        try:
            return _dispatch(ds, name, max_pdf_pages)
        except DICOM_READ_ERRORS:
            # Nested sequences are decoded lazily; damage inside them surfaces here.
            raise UnreadableFile(
                "DICOM file is corrupt or truncated: a nested sequence cannot be decoded; "
                "send the file again from the scanner"
            ) from None


def _dispatch(ds: object, name: str, max_pdf_pages: int) -> tuple[ParsedReport, ...]:
    from pydicom.dataset import Dataset

    assert isinstance(ds, Dataset)
    sop = h.text(ds, h.T_SOP_CLASS) or ""
    if sop == h.SOP_ENCAPSULATED_PDF:
        return parse_encapsulated_pdf(ds, name, max_pages=max_pdf_pages)
    if sop in h.SR_SOP_CLASSES:
        return (parse_ge_sr(ds, name),)
    hologic = find_results_element(ds)
    if hologic is None:
        hologic = find_results_by_content(ds)  # the private creator was stripped on the way
    if hologic is not None:
        return (parse_hologic(ds, name, hologic),)
    xml = results_xml(ds)
    if xml is not None:
        return (parse_ge_xml(ds, name, xml),)
    manufacturer = (h.text(ds, h.T_MANUFACTURER) or "").upper()
    if manufacturer.startswith("HOLOGIC"):
        return (parse_hologic(ds, name),)  # raises NotDxaResult naming the missing private data
    raise NotDxaResult(
        "image only: no BMD results in this DICOM file (no structured report, no vendor results "
        "data); send the scanner's results export (SR or report) instead"
    )
