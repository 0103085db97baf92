"""QA pages (qa and admin roles only): refused comparisons, machines and precision, ingest."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from db.models import Device
from web import precision, queries
from web.auth import check_csrf
from web.deps import App, DbSession, QaUser, render
from web.exports import to_csv

router = APIRouter()
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
PRECISION_SITES = ("L1-L4", "L2-L4", "total_hip", "femoral_neck", "radius_33")


# --------------------------------------------------------------------------- refused comparisons


def _refused(
    session: Session, device: int | None, start: date | None, end: date | None
) -> list[queries.RefusedComparison]:
    return queries.refused_comparisons(session, device_pk=device, start=start, end=end)


@router.get("/qa/comparisons", include_in_schema=False)
def refused_page(
    request: Request,
    session: DbSession,
    _: QaUser,
    device: int | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Response:
    rows = _refused(session, device, start, end)
    context = {
        "rows": rows,
        "devices": queries.all_devices(session),
        "device": device,
        "start": start,
        "end": end,
    }
    return render(request, "qa_comparisons.html", context)


@router.get("/api/qa/comparisons", tags=["qa"])
def refused_api(
    session: DbSession,
    _: QaUser,
    device: int | None = None,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, Any]:
    """Every comparison refused because the two exams were not on one machine (or one had no
    serial), filterable by device id and by the later exam's date."""
    rows = _refused(session, device, start, end)
    return {"comparisons": [_jsonable(asdict(r)) for r in rows]}


@router.get("/qa/comparisons.csv", include_in_schema=False)
def refused_csv(
    session: DbSession,
    user: QaUser,
    device: int | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Response:
    rows = _refused(session, device, start, end)
    queries.add_audit(session, user, "refused_comparisons_exported", None, rows=len(rows))
    session.commit()
    columns = (
        "patient_id",
        "site",
        "side",
        "reference",
        "from_date",
        "to_date",
        "from_device",
        "to_device",
        "status",
        "reason",
    )
    body = to_csv(
        [
            (
                r.patient_id,
                r.site,
                r.side,
                r.reference,
                r.from_date.isoformat(),
                r.to_date.isoformat(),
                r.from_device,
                r.to_device,
                r.status,
                r.reason,
            )
            for r in rows
        ],
        columns,
    )
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="refused-comparisons.csv"'},
    )


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in data.items()}


# --------------------------------------------------------------------------- machines


def _technologist_checks(
    session: Session, app: App, details: list[queries.DeviceDetail]
) -> dict[int, list[precision.TechnologistResult]]:
    """Per study, the technologists whose precision exceeds the configured ISCD limit."""
    flagged: dict[int, list[precision.TechnologistResult]] = defaultdict(list)
    for detail in details:
        for study in detail.studies:
            repeats = queries.precision_repeats(session, study.pk)
            if not repeats:
                continue
            preview = precision.compute(study.site, repeats, app.monitoring)
            flagged[study.pk].extend(preview.over_limit)
    return flagged


@router.get("/qa/devices", include_in_schema=False)
def devices_page(request: Request, session: DbSession, app: App, _: QaUser) -> Response:
    details = queries.device_details(session)
    context = {
        "details": details,
        "flagged": _technologist_checks(session, app, details),
        "sites": PRECISION_SITES,
        "preview": None,
        "upload": None,
        "error": None,
    }
    return render(request, "qa_devices.html", context)


@router.get("/api/qa/devices", tags=["qa"])
def devices_api(session: DbSession, app: App, _: QaUser) -> dict[str, Any]:
    """Devices with software versions seen, precision studies (RMS-SD, LSC), technologists over
    the ISCD limit, and cross-calibrations."""
    details = queries.device_details(session)
    flagged = _technologist_checks(session, app, details)
    return {
        "devices": [
            {
                "id": d.device.pk,
                "manufacturer": d.device.manufacturer,
                "model": d.device.model,
                "serial": d.device.serial,
                "identity_strength": d.identity_strength,
                "software_versions": list(d.software_versions),
                "exam_count": d.exam_count,
                "precision_studies": [
                    {
                        **_jsonable(asdict(s)),
                        "technologists_over_limit": [
                            {"technologist": t.technologist, "message": t.check.message if t.check else None}
                            for t in flagged.get(s.pk, [])
                        ],
                    }
                    for s in d.studies
                ],
                "cross_calibrations": [_jsonable(asdict(c)) for c in d.crosscals],
            }
            for d in details
        ]
    }


@router.post("/qa/devices/precision", include_in_schema=False)
async def precision_upload(
    request: Request,
    session: DbSession,
    app: App,
    user: QaUser,
    device: Annotated[int, Form()],
    site: Annotated[str, Form()],
    action: Annotated[str, Form()] = "preview",
    performed_on: Annotated[str, Form()] = "",
    csv_text: Annotated[str, Form()] = "",
    file: UploadFile | None = None,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Preview (compute RMS-SD and LSC, save nothing) or save an uploaded precision study. The
    preview page carries the CSV back in a hidden field, so saving stores exactly what was seen."""
    check_csrf(request, csrf_token)
    if session.get(Device, device) is None:
        raise HTTPException(404, "no such device")
    if file is not None and file.filename:
        raw = await file.read(MAX_UPLOAD_BYTES + 1)
        if len(raw) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, "precision study file too large")
        csv_text = raw.decode("utf-8-sig", errors="replace")
    details = queries.device_details(session)
    context: dict[str, Any] = {
        "details": details,
        "flagged": _technologist_checks(session, app, details),
        "sites": PRECISION_SITES,
        "upload": {"device": device, "site": site, "performed_on": performed_on, "csv_text": csv_text},
        "preview": None,
        "error": None,
    }
    try:
        when = date.fromisoformat(performed_on) if performed_on else None
        repeats = precision.parse_csv(csv_text)
    except ValueError as exc:
        context["error"] = str(exc)
        return render(request, "qa_devices.html", context, status_code=422)
    preview = precision.compute(site, repeats, app.monitoring)
    context["preview"] = preview
    if action != "save" or preview.facility is None:
        return render(request, "qa_devices.html", context, status_code=200 if preview.facility else 422)
    queries.save_precision_study(
        session, device, site, when, repeats, preview.facility.rms_sd_g_cm2, preview.facility.lsc_g_cm2
    )
    queries.add_audit(session, user, "precision_study_saved", None, device=device, site=site)
    session.commit()
    return RedirectResponse("/qa/devices", status_code=303)


# --------------------------------------------------------------------------- ingest


@router.get("/qa/ingest", include_in_schema=False)
def ingest_page(request: Request, session: DbSession, _: QaUser, notice: str | None = None) -> Response:
    context = {
        "recent": queries.recent_files(session, limit=200),
        "quarantined": queries.recent_files(session, status="quarantined", limit=500),
        "notice": notice,
    }
    return render(request, "qa_ingest.html", context)


@router.get("/api/qa/ingest", tags=["qa"])
def ingest_api(session: DbSession, _: QaUser, status: str | None = None, limit: int = 200) -> dict[str, Any]:
    """Recently received files with their status and, for quarantined ones, the reason."""
    files = queries.recent_files(session, status=status, limit=min(max(limit, 1), 1000))
    return {"files": [{**_jsonable(asdict(f)), "received_at": f.received_at.isoformat(), "id": f.pk} for f in files]}


def _reprocess(session: Session, user: Any, file_pk: int) -> None:
    if not queries.requeue_quarantined(session, file_pk):
        raise HTTPException(404, "no quarantined file with that id")
    queries.add_audit(session, user, "file_reprocess_requested", None, source_file=file_pk)
    session.commit()


@router.post("/qa/ingest/{file_pk}/reprocess", include_in_schema=False)
def reprocess_form(
    request: Request, session: DbSession, user: QaUser, file_pk: int, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, csrf_token)
    _reprocess(session, user, file_pk)
    return RedirectResponse("/qa/ingest?notice=File+queued+for+re-processing.", status_code=303)


@router.post("/api/qa/ingest/{file_pk}/reprocess", tags=["qa"], status_code=202)
def reprocess_api(request: Request, session: DbSession, user: QaUser, file_pk: int) -> dict[str, Any]:
    """Queue a quarantined file for ingestion again (after its cause was fixed)."""
    if not user.via_token:
        check_csrf(request, request.headers.get("x-csrf-token"))
    _reprocess(session, user, file_pk)
    return {"queued": file_pk}
