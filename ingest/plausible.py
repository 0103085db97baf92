"""Apply the core's plausibility rules (`monitor.plausibility`) to a parsed report.

Called by `parse_file` after a parser succeeded, so whatever stores a report (the pipeline, the
CLI, the DICOM receiver) only ever sees values that fit their columns and can be true. All the
problems of a file are listed at once (bounded), so one look at the QA page says what is wrong.
"""

from __future__ import annotations

from datetime import date

from ingest.errors import ImplausibleValues
from ingest.report import ParsedReport
from monitor import plausibility as p

_MAX_LISTED = 5


def report_problems(report: ParsedReport, today: date | None) -> list[str]:
    problems: list[str] = []
    patient, device = report.patient, report.device
    problems += p.check_text("patient ID", patient.patient_id, required=True)
    problems += p.check_text("issuer", patient.issuer)
    problems += p.check_text("patient name", patient.name)
    problems += p.check_text("sex", patient.sex)
    problems += p.check_text("manufacturer", device.manufacturer)
    problems += p.check_text("device model", device.model)
    problems += p.check_text("device serial", device.serial)
    problems += p.check_text("software version", device.software_version)
    problems += p.check_text("format", report.format)
    problems += p.check_text("SOP instance UID", report.sop_instance_uid)
    problems += p.check_text("study UID", report.study_instance_uid, max_length=64)
    problems += p.check_text("accession", report.accession, max_length=64)
    problems += p.check_text("scan mode", report.scan_mode)
    problems += p.check_text("analysis protocol", report.analysis_protocol)
    problems += p.check_text("scan type", report.scan_type, max_length=32)
    problems += p.check_text("reference database", report.extras.reference_database)
    problems += p.check_text("vertebral set", report.vertebral_set)
    for note in report.extras.notes:
        problems += p.check_text("a vendor note", note)
    problems += p.check_dates(report.exam_date, patient.birth_date, today)
    for m in report.measurements:
        where = f"{m.site} {m.side}" if m.side else m.site
        problems += p.check_text("site", m.site)
        problems += p.check_text("side", m.side)
        problems += p.check_text("provenance", m.provenance)
        problems += p.check_measurement(
            where, bmd=m.bmd, bmc_g=m.bmc_g, area_cm2=m.area_cm2, t_score=m.t_score, z_score=m.z_score
        )
    for row in report.extras.history:
        problems += p.check_history_date(row.date, report.exam_date)
        problems += p.check_value(f"trend BMD at {row.site}", row.bmd, p.BMD)
    for site, lsc in report.extras.printed_lsc_g_cm2:
        problems += p.check_value(f"printed LSC at {site}", lsc, p.LSC)
    return list(dict.fromkeys(problems))  # one line per distinct problem, first seen first


def check_report(report: ParsedReport, today: date | None) -> ParsedReport:
    """The report unchanged, or ImplausibleValues naming what cannot be true."""
    problems = report_problems(report, today)
    if not problems:
        return report
    more = len(problems) - _MAX_LISTED
    listed = "; ".join(problems[:_MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
    raise ImplausibleValues(
        f"values that cannot be true were read, nothing was stored: {listed}. "
        "Check the exam on the scanner and export it again"
    )
