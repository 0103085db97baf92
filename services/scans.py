"""The verification queue of scanned, faxed and photographed reports (issue 14): hold what OCR
read, then a QA user confirms it (the patient matched or created, the exam stored with source
`ocr`, the patient evaluated) or rejects it (the file quarantined with the reason).

A value typed from a scan into a trend is a clinical risk, so OCR never stores results: a held
scan is not trended, compared, scheduled or exported, because nothing of it is in the exam
tables until a person confirms it. A scan whose patient ID could not be read waits for that
person to enter it; it is never attached to anyone before. Every correction and confirmation is
audited with the user and the values before and after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.files import finish_ingested, mark_quarantined
from db.jobs import finish_job_id
from db.models import Measurement, ScanCrop, ScanRow, SourceFile
from db.reports import store_report
from ingest.errors import ParseError
from ingest.ocr.read import ScanReading, ScanReport
from ingest.plausible import check_report
from ingest.report import DeviceIdentity, ParsedReport, PatientInfo, SiteMeasurement
from services.audit import Actor, record
from services.bytestore import database_path, kept_in_database
from services.context import Context
from services.files import archive_path, move_durably, quarantine_file
from services.outcomes import PARSER_VERSION, ClaimedJob, JobResult
from services.queue import unit_of_work

log = logging.getLogger(__name__)

REJECTED = "ocr_rejected"  # quarantine reason code of a scan a person rejected
_COLUMNS = {"bmd": "bmd", "t": "t_score", "z": "z_score", "bmc": "bmc_g", "area": "area_cm2"}


class ScanDecisionError(ValueError):
    """A confirmation the values do not allow (no patient ID, a value that is not a number…);
    the message says which, for the reviewer."""


def _now() -> datetime:
    return datetime.now(UTC)


def _value_json(report: ScanReport) -> list[dict[str, Any]]:
    values = [
        {
            "key": v.key,
            "text": v.text,
            "confidence": round(v.confidence, 1),
            "page": v.page,
            "box": list(v.box) if v.box else None,
            "failed": list(v.failed),
            "normalised": v.normalised,
            "doubtful": v.doubtful,
        }
        for v in report.values
    ]
    keys = {v["key"] for v in values}
    for key in ("patient_id", "exam_date", "device_model", "device_serial"):  # always asked for, read or not
        if key not in keys:
            values.insert(
                0,
                {
                    "key": key,
                    "text": "",
                    "confidence": 0.0,
                    "page": report.first_page,
                    "box": None,
                    "failed": [],
                    "normalised": False,
                    "doubtful": True,
                },
            )
    return values


def reading_json(report: ScanReport) -> dict[str, Any]:
    """What a held scan keeps: the report's fields and every value as read."""
    r = report.report
    return {
        "format": r.format,
        "first_page": report.first_page,
        "name": r.patient.name,
        "sex": r.patient.sex,
        "manufacturer": r.device.manufacturer,
        "model": r.device.model,
        "software_version": r.device.software_version,
        "accession": r.accession,
        "scan_mode": r.scan_mode,
        "analysis_protocol": r.analysis_protocol,
        "sites": [[m.site, m.side, m.provenance] for m in r.measurements] + [list(row) for row in report.unread],
        "values": _value_json(report),
    }


def hold_scan(ctx: Context, session: Session, job: ClaimedJob, file: SourceFile, reading: ScanReading) -> JobResult:
    """In the caller's transaction: one pending scan per report found (one with the reasons when
    none was), the crops, the file `held`, the job done."""
    reports = reading.reports
    rows: list[tuple[ScanRow, dict[str, bytes]]] = []
    for index, found in enumerate(reports):
        crops = {v.key: v.crop_png for v in found.values if v.crop_png}
        rows.append(
            (
                ScanRow(
                    source_file_id=file.id,
                    report_index=index,
                    engine=reading.engine,
                    reading=reading_json(found),
                    problems=[*found.problems, *reading.problems],
                ),
                crops,
            )
        )
    if not rows:
        rows.append(
            (
                ScanRow(
                    source_file_id=file.id,
                    report_index=0,
                    engine=reading.engine,
                    reading={"values": []},
                    problems=list(reading.problems) or ["nothing could be read from the scan"],
                ),
                {},
            )
        )
    for index, thumb in enumerate(reading.thumbnails, start=1):
        rows[0][1][f"page{index}"] = thumb
    for row, crops in rows:
        session.add(row)
        session.flush()
        for key, png in crops.items():
            session.add(ScanCrop(scan_id=row.id, key=key[:64], png=png))
    file.status = "held"
    file.format = reports[0].report.format if reports else None
    file.parser_version = PARSER_VERSION
    file.reason_code = None
    file.reason_text = "read by OCR: waiting for a person to confirm the values"
    finish_job_id(session, job.id)
    detail = f"OCR: {len(rows)} report(s) held for verification"
    return JobResult(job.id, job.kind, "held", detail, file.id)


# --------------------------------------------------------------------------- reading the queue


@dataclass(frozen=True)
class Decision:
    scan_id: int
    status: str
    patient_pk: int | None = None


def pending_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ScanRow).where(ScanRow.status == "pending")) or 0)


def _edited(values: list[dict[str, Any]], edits: dict[str, str]) -> tuple[dict[str, str], list[dict[str, str]]]:
    final: dict[str, str] = {}
    changes: list[dict[str, str]] = []
    for value in values:
        key, before = value["key"], value["text"] or ""
        after = edits.get(key, before).strip()
        final[key] = after
        if after != before:
            changes.append({"key": key, "before": before, "after": after})
    return final, changes


def _number(key: str, text: str) -> float | None:
    if not text:
        return None
    try:
        return float(text.replace(",", ".").replace("−", "-"))
    except ValueError:
        raise ScanDecisionError(f"{key}: '{text}' is not a number") from None


def _date(key: str, text: str, required: bool) -> date | None:
    if not text:
        if required:
            raise ScanDecisionError(f"{key}: required (YYYY-MM-DD)")
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ScanDecisionError(f"{key}: '{text}' is not a date (YYYY-MM-DD)") from None


def report_of(reading: dict[str, Any], final: dict[str, str]) -> ParsedReport:
    """The confirmed values as a parsed report: what a text PDF of this page would have given."""
    patient_id = final.get("patient_id", "")
    if not patient_id:
        raise ScanDecisionError("patient ID: required; the scan cannot be attached to anyone without it")
    measurements = []
    for site, side, provenance in reading.get("sites", []):
        prefix = f"{site}/{side or '-'}/"
        cols = {col: _number(prefix + col, final.get(prefix + col, "")) for col in _COLUMNS}
        bmd = cols["bmd"]
        if bmd is None:
            continue  # the reviewer cleared a row's BMD: that site is not stored
        measurements.append(
            SiteMeasurement(
                site=site,
                side=side,
                bmd=bmd,
                t_score=cols["t"],
                z_score=cols["z"],
                bmc_g=cols["bmc"],
                area_cm2=cols["area"],
                provenance=f"scan {provenance.removeprefix('pdf ')} (OCR, confirmed)",
            )
        )
    if not measurements:
        raise ScanDecisionError("no BMD value left to store")
    exam_date = _date("exam_date", final.get("exam_date", ""), required=True)
    assert exam_date is not None
    from ingest.pdf.engine import _analysed_range_first, _scan_type

    return ParsedReport(
        format=str(reading.get("format") or "ocr"),
        patient=PatientInfo(
            patient_id=patient_id,
            name=reading.get("name"),
            birth_date=_date("birth_date", final.get("birth_date", ""), required=False),
            sex=reading.get("sex"),
        ),
        exam_date=exam_date,
        device=DeviceIdentity(
            manufacturer=str(reading.get("manufacturer") or "unknown"),
            model=_required(final, "device_model", "device model"),
            serial=final.get("device_serial") or None,
            software_version=reading.get("software_version"),
        ),
        scan_type=_scan_type(measurements),
        measurements=_analysed_range_first(measurements),
        accession=reading.get("accession"),
        scan_mode=reading.get("scan_mode"),
        analysis_protocol=reading.get("analysis_protocol"),
    )


def _required(final: dict[str, str], key: str, what: str) -> str:
    value = final.get(key, "")
    if not value:
        raise ScanDecisionError(f"{what}: required")
    return value


def _pending(session: Session, scan_id: int) -> ScanRow:
    scan = session.get(ScanRow, scan_id, with_for_update=True)
    if scan is None:
        raise LookupError("no such scan")
    if scan.status != "pending":
        raise ScanDecisionError(f"this scan was already {scan.status}")
    return scan


def confirm_scan(ctx: Context, actor: Actor, scan_id: int, edits: dict[str, str], today: date) -> Decision:
    """Store the reviewed values as an exam (source `ocr`), audit every value before and after,
    queue the patient's evaluation; the file is archived once none of its scans waits."""
    move: tuple[Path, Path] | None = None
    with unit_of_work(ctx) as work:
        session = work.session
        scan = _pending(session, scan_id)
        values = list(scan.reading.get("values", []))
        if not values:
            raise ScanDecisionError("nothing was read from this scan: it can only be rejected")
        final, changes = _edited(values, edits)
        report = report_of(scan.reading, final)
        try:
            report = check_report(report, today)
        except ParseError as exc:
            raise ScanDecisionError(exc.message) from None
        file = session.get(SourceFile, scan.source_file_id)
        assert file is not None
        stored = store_report(session, report, source_file_id=file.id)
        others = session.scalar(
            select(func.count())
            .select_from(Measurement)
            .where(Measurement.exam_id == stored.exam.id, Measurement.source_file_id != file.id)
        )
        if not others:
            stored.exam.source = "ocr"
        scan.status, scan.decided_by, scan.decided_at = "confirmed", actor.username, _now()
        scan.patient_id, scan.exam_id = stored.patient.id, stored.exam.id
        record(
            session,
            actor,
            "scan_confirmed",
            stored.patient.id,
            scan_id=scan.id,
            source_file_id=file.id,
            exam_id=stored.exam.id,
            changes=changes,
            confirmed={k: v for k, v in final.items() if k not in ("name",)},
        )
        work.queue_evaluations([stored.patient.id])
        move = _finish_file(ctx, session, file, stored.patient.id, stored.exam.id)
        patient_pk = stored.patient.id
    if move:
        move_durably(*move)
    return Decision(scan_id, "confirmed", patient_pk)


def reject_scan(ctx: Context, actor: Actor, scan_id: int, reason: str) -> Decision:
    """Refuse a scan with the reviewer's reason; the file goes to quarantine when none of its
    scans waits or was confirmed."""
    reason = reason.strip()
    if not reason:
        raise ScanDecisionError("a reason is required to reject a scan")
    quarantined: tuple[Path, dict[str, Any]] | None = None
    with ctx.sessions.begin() as session:
        scan = _pending(session, scan_id)
        scan.status, scan.decided_by, scan.decided_at, scan.reason = "rejected", actor.username, _now(), reason
        record(
            session, actor, "scan_rejected", None, scan_id=scan.id, source_file_id=scan.source_file_id, reason=reason
        )
        file = session.get(SourceFile, scan.source_file_id)
        assert file is not None
        session.flush()
        if _waiting(session, file.id) == 0 and not _confirmed(session, file.id):
            quarantined = _quarantine_file(ctx, session, file, reason)
    if quarantined:
        work_path, side = quarantined
        quarantine_file(work_path, ctx.settings.quarantine_dir, REJECTED, side)
    return Decision(scan_id, "rejected")


def _waiting(session: Session, file_id: int) -> int:
    stmt = (
        select(func.count()).select_from(ScanRow).where(ScanRow.source_file_id == file_id, ScanRow.status == "pending")
    )
    return int(session.scalar(stmt) or 0)


def _confirmed(session: Session, file_id: int) -> ScanRow | None:
    stmt = select(ScanRow).where(ScanRow.source_file_id == file_id, ScanRow.status == "confirmed").limit(1)
    return session.scalars(stmt).first()


def _finish_file(
    ctx: Context, session: Session, file: SourceFile, patient_pk: int, exam_pk: int
) -> tuple[Path, Path] | None:
    session.flush()
    if _waiting(session, file.id):
        return None
    work_path = Path(file.stored_path or "")
    in_db = kept_in_database(ctx, session, file.sha256)
    dest = (
        Path(database_path(file.sha256))
        if in_db
        else archive_path(ctx.settings.archive_dir, file.sha256, file.original_name, _now().date())
    )
    finish_ingested(
        session,
        file.id,
        stored_path=str(dest),
        patient_id=patient_pk,
        exam_id=exam_pk,
        format=file.format or "ocr",
        sop_instance_uid=None,
        parser_version=PARSER_VERSION,
    )
    if in_db or not work_path.is_file():
        return None
    return work_path, dest


def _quarantine_file(
    ctx: Context, session: Session, file: SourceFile, reason: str
) -> tuple[Path, dict[str, Any]] | None:
    from services.ingestion import sidecar

    text = f"rejected at verification of the OCR reading: {reason}"
    work_path = Path(file.stored_path or "")
    in_db = kept_in_database(ctx, session, file.sha256)
    dest = (
        Path(database_path(file.sha256))
        if in_db
        else (ctx.settings.quarantine_dir / REJECTED / f"{file.sha256}{work_path.suffix}")
    )
    mark_quarantined(
        session, file, reason_code=REJECTED, reason_text=text, stored_path=str(dest), parser_version=PARSER_VERSION
    )
    side = sidecar(file, REJECTED, text)
    if in_db or not work_path.is_file():
        return None
    return work_path, side


_SCAN_SUFFIXES = (".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def upload_scan(ctx: Context, actor: Actor, name: str, data: bytes) -> int:
    """A scan uploaded on the QA page enters the same intake as a file dropped in the inbox; the
    id of its file row."""
    import uuid

    from services.files import display_name
    from services.intake import register_claimed

    if not data:
        raise ScanDecisionError("the uploaded file is empty")
    if len(data) > ctx.settings.max_file_bytes:
        raise ScanDecisionError("the uploaded file is over the configured size limit")
    suffix = Path(name).suffix.lower()
    suffix = suffix if suffix in _SCAN_SUFFIXES else ""
    work_dir = ctx.settings.work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"upload-{uuid.uuid4().hex}{suffix}"
    path.write_bytes(data)
    result = register_claimed(ctx, path, display_name(name or f"upload{suffix}"))
    with ctx.sessions.begin() as session:
        record(session, actor, "scan_uploaded", None, source_file_id=result.source_file_id, outcome=result.outcome)
    return result.source_file_id
