"""DICOM result files: which vendor layout a dataset carries, and its parser.

Routing is by content, never by file name: the SOP class first (Enhanced SR, Encapsulated
PDF), then where results hide in image objects (Hologic private block, GE ImageComments XML).
A readable image with none of these is an image, not a result.
"""

from __future__ import annotations

import contextlib
import warnings

from pydicom.dataset import Dataset

from ingest.dicom import header as h
from ingest.dicom.embedded import carried_instances, is_directory
from ingest.dicom.encapsulated import parse_encapsulated_pdf
from ingest.dicom.ge_sr import CONTENT_SEQ, content_tree
from ingest.dicom.ge_xml import parse_ge_xml, results_xml
from ingest.dicom.hologic import parse_hologic
from ingest.dicom.hologic_blob import find_results_by_content, find_results_elements
from ingest.dicom.read import DICOM_READ_ERRORS, looks_like_dicom, read_dicom_parts
from ingest.dicom.sr_documents import parse_documents
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
    """Every report of a DICOM file, each with the patient, date and machine of its own header:
    one per dataset, except an Encapsulated PDF whose PDF holds several, a structured report of
    several documents, and a file of several datasets one after the other."""
    with warnings.catch_warnings():
        # pydicom quotes element values (names, IDs, UIDs) in its warnings; none may be printed.
        warnings.simplefilter("ignore")
        parts = read_dicom_parts(data)
        try:
            return tuple(report for ds in parts for report in _dispatch(ds, name, max_pdf_pages))
        except DICOM_READ_ERRORS:
            # Nested sequences are decoded lazily; damage inside them surfaces here.
            raise UnreadableFile(
                "DICOM file is corrupt or truncated: a nested sequence cannot be decoded; "
                "send the file again from the scanner"
            ) from None


def _dispatch(ds: Dataset, name: str, max_pdf_pages: int) -> tuple[ParsedReport, ...]:
    """The reports of one dataset, and of the instances it carries (`ingest.dicom.embedded`)."""
    carried = carried_instances(ds)
    if not carried:
        return _dispatch_one(ds, name, max_pdf_pages)
    reports: list[ParsedReport] = []
    if not is_directory(ds):
        with contextlib.suppress(NotDxaResult):  # an envelope without results of its own
            reports.extend(_dispatch_one(ds, name, max_pdf_pages))
    for instance in carried:
        try:
            reports.extend(_dispatch_one(instance, name, max_pdf_pages))
        except NotDxaResult:
            continue  # an index record of a file stored elsewhere, an image: no results here
    if not reports:
        raise NotDxaResult(
            "no results: this DICOM file is an index or envelope (for example a DICOMDIR) whose records "
            "carry no BMD results; send the result files it lists instead"
        )
    return tuple(reports)


def _hologic_reports(ds: Dataset, name: str, blocks: list[bytes | str]) -> tuple[ParsedReport, ...]:
    """One report per HOLOGIC block that holds results; a block of other data (a second creator
    reserving parameters, not results) is passed over, but a damaged results block refuses the file."""
    reports: list[ParsedReport] = []
    first_error: NotDxaResult | None = None
    for block in blocks:
        try:
            reports.append(parse_hologic(ds, name, block))
        except NotDxaResult as exc:
            first_error = first_error or exc
    if not reports:
        assert first_error is not None
        raise first_error
    return tuple(reports)


def _dispatch_one(ds: Dataset, name: str, max_pdf_pages: int) -> tuple[ParsedReport, ...]:
    sop = h.text(ds, h.T_SOP_CLASS) or ""
    if sop == h.SOP_ENCAPSULATED_PDF:
        return parse_encapsulated_pdf(ds, name, max_pages=max_pdf_pages)
    if sop in h.SR_SOP_CLASSES or (not sop and CONTENT_SEQ in ds):
        tree, dec = content_tree(ds)
        return parse_documents(ds, tree, dec)
    blocks: list[bytes | str] = find_results_elements(ds)
    if not blocks:
        stripped = find_results_by_content(ds)  # the private creator was stripped on the way
        blocks = [stripped] if stripped is not None else []
    if blocks:
        return _hologic_reports(ds, name, blocks)
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
