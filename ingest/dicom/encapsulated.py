"""Encapsulated PDF (1.2.840.10008.5.1.4.1.1.104.1): the PDF is the report, the DICOM header
is its envelope. The PDF parser reads the results; the header fills what a printout may not
carry (UIDs always, patient and device fields when the PDF lacks them)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from ingest.dicom import header as h
from ingest.errors import MissingField, NotDxaResult, PatientMismatch, UnsupportedLayout

if TYPE_CHECKING:
    from ingest.report import ParsedReport

T_ENCAPSULATED_DOCUMENT = 0x00420011
T_MIME_TYPE = 0x00420012
T_ENCAPSULATED_LENGTH = 0x00420015


def pdf_bytes(ds: Dataset) -> bytes:
    mime = (h.text(ds, T_MIME_TYPE) or "application/pdf").lower()
    doc = h.value(ds, T_ENCAPSULATED_DOCUMENT)
    if "pdf" not in mime or not isinstance(doc, bytes) or not doc:
        raise NotDxaResult("no results: this Encapsulated Document holds no PDF")
    length = h.value(ds, T_ENCAPSULATED_LENGTH)
    if isinstance(length, int) and 0 < length <= len(doc):
        doc = doc[:length]  # drop the even-length padding byte
    if not doc.lstrip()[:5].startswith(b"%PDF"):
        raise NotDxaResult("no results: the encapsulated document is not a PDF")
    return doc


def parse_encapsulated_pdf(ds: Dataset, name: str, *, max_pages: int) -> tuple[ParsedReport, ...]:
    doc = pdf_bytes(ds)
    from ingest.pdf.parse import parse_pdf_reports  # lazy: the PDF package loads pdf libraries

    try:
        reports = parse_pdf_reports(doc, name, max_pages=max_pages, envelope_dates=_header_dates(ds))
    except (UnsupportedLayout, NotDxaResult):
        # A PDF in a DICOM envelope that is not a report we know is a scanned form, a
        # questionnaire or a letter: nothing to ingest, and nothing a new template would fix.
        raise NotDxaResult(
            "no results: the PDF inside this DICOM file is not a DXA report (no BMD table found; "
            "for example a questionnaire or a scanned form)"
        ) from None
    return tuple(fill_from_header(report, ds) for report in reports)


def _header_dates(ds: Dataset) -> tuple[date, ...]:
    """The exam dates the envelope states (study, content, acquisition): DICOM DA values are
    YYYYMMDD, so they settle the order of a printout's numeric dates when they match one reading."""
    found = (h.dicom_date(h.text(ds, tag)) for tag in (h.T_STUDY_DATE, h.T_CONTENT_DATE, h.T_ACQ_DATE))
    return tuple(when for when in found if when is not None)


def _same_id(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def fill_from_header(report: ParsedReport, ds: Dataset) -> ParsedReport:
    """The header fills what the printout lacks; a header naming another patient than the report
    it carries is refused (a router or a PACS merge put the wrong envelope on it)."""
    patient = report.patient
    try:
        header_patient = h.patient(ds)
    except MissingField:
        header_patient = None
    named = header_patient.patient_id if header_patient is not None else None
    if named and patient.patient_id and not _same_id(patient.patient_id, named):
        raise PatientMismatch(
            "the DICOM header names another patient than the PDF report it carries; "
            "check which patient this report belongs to before re-processing"
        )
    if header_patient is not None:
        patient = replace(
            patient,
            patient_id=patient.patient_id or header_patient.patient_id,
            issuer=patient.issuer or header_patient.issuer,
            name=patient.name or header_patient.name,
            birth_date=patient.birth_date or header_patient.birth_date,
            sex=patient.sex or header_patient.sex,
        )
    dev = report.device
    model_header, serial_in_model = h.split_model_serial(h.text(ds, h.T_MODEL) or "")
    dev = replace(
        dev,
        manufacturer=dev.manufacturer or h.text(ds, h.T_MANUFACTURER) or "",
        model=dev.model or model_header,
        serial=dev.serial or h.text(ds, h.T_DEVICE_SERIAL) or serial_in_model,
        software_version=dev.software_version or h.text(ds, h.T_SOFTWARE),
    )
    uids = h.uids(ds)
    return replace(
        report,
        patient=patient,
        device=dev,
        sop_instance_uid=uids["sop_instance_uid"],
        study_instance_uid=uids["study_instance_uid"],
        accession=report.accession or uids["accession"],
    )
