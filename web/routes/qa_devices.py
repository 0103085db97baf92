"""QA machines page: each machine's software versions, precision studies (with technologists over
the ISCD limit) and cross-calibrations, and the two calculators, precision study and
cross-calibration, each previewed before it is saved (the same use cases as the command line)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from db.calibration import PrecisionRepeat
from db.models import Device
from monitor.precision import TechnologistStudy
from services.crosscal import CROSSCAL_KINDS, CrossCalKind, CrossCalPreview, preview_crosscal, save_crosscal
from services.csv_rows import ImportError_
from services.precision import preview_precision, save_precision, study_of
from web import crosscal
from web.auth import CurrentUser, check_csrf
from web.deps import App, DbSession, QaUser, actor, render
from web.queries import qa as qa_q
from web.routes.qa import jsonable

router = APIRouter()
CSV_LABEL = "CSV"  # what error messages call the uploaded file ("CSV: line 3: field site: …")
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
PRECISION_SITES = ("L1-L4", "L2-L4", "total_hip", "femoral_neck", "radius_33")


def _technologist_checks(
    session: Session, app: App, details: list[qa_q.DeviceDetail]
) -> dict[int, list[TechnologistStudy]]:
    """Per study, the technologists whose precision exceeds the configured ISCD limit."""
    flagged: dict[int, list[TechnologistStudy]] = defaultdict(list)
    for detail in details:
        for study in detail.studies:
            repeats = [PrecisionRepeat(*r) for r in qa_q.precision_repeats(session, study.pk)]
            if not repeats:
                continue
            flagged[study.pk].extend(study_of(study.site, repeats, app.monitoring).over_limit)
    return flagged


def _devices_context(session: Session, app: App) -> dict[str, Any]:
    """What the machines page needs besides the calculators' own preview and error."""
    details = qa_q.device_details(session)
    return {
        "details": details,
        "flagged": _technologist_checks(session, app, details),
        "crosscal_cards": crosscal.device_cards(session),
        "sites": PRECISION_SITES,
        "crosscal_kinds": CROSSCAL_KINDS,
        "crosscal_limits": app.monitoring,
        "preview": None,
        "upload": None,
        "error": None,
        "crosscal_preview": None,
        "crosscal_upload": None,
        "crosscal_error": None,
    }


@router.get("/qa/devices", include_in_schema=False)
def devices_page(request: Request, session: DbSession, app: App, _: QaUser) -> Response:
    return render(request, "qa_devices.html", _devices_context(session, app))


@router.get("/api/qa/devices", tags=["qa"])
def devices_api(session: DbSession, app: App, _: QaUser) -> dict[str, Any]:
    """Devices with software versions seen, precision studies (RMS-SD, LSC), technologists over
    the ISCD limit, and cross-calibrations."""
    details = qa_q.device_details(session)
    flagged = _technologist_checks(session, app, details)
    cards = crosscal.device_cards(session)
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
                        **jsonable(asdict(s)),
                        "technologists_over_limit": [
                            {"technologist": t.technologist, "message": t.check.message if t.check else None}
                            for t in flagged.get(s.pk, [])
                        ],
                    }
                    for s in d.studies
                ],
                "cross_calibrations": [crosscal.card_json(c) for c in cards.get(d.device.pk, [])],
            }
            for d in details
        ]
    }


async def _uploaded_csv(file: UploadFile | None, csv_text: str, what: str) -> str:
    """The CSV of a calculator form: the uploaded file when one was chosen, else the text carried
    back by the preview page. Read at most one byte past the limit, so a huge upload costs nothing."""
    if file is None or not file.filename:
        return csv_text
    raw = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(raw) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"{what} file too large (2 MiB at most)")
    return raw.decode("utf-8-sig", errors="replace")


def _optional_day(text: str) -> date | None:
    """A form's ISO date, None when left empty (ValueError when unreadable, as the callers expect)."""
    return date.fromisoformat(text) if text else None


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
    """Preview (compute RMS-SD and LSC, save nothing) or save an uploaded precision study, in the
    CSV layout of `dxa precision import` (the machine and site chosen here fill those columns). The
    preview page carries the CSV back in a hidden field, so saving stores exactly what was seen."""
    check_csrf(request, csrf_token)
    chosen = session.get(Device, device)
    if chosen is None:
        raise HTTPException(404, "no such device")
    csv_text = await _uploaded_csv(file, csv_text, "precision study")
    context = _devices_context(session, app)
    context["upload"] = {"device": device, "site": site, "performed_on": performed_on, "csv_text": csv_text}
    try:
        when = _optional_day(performed_on)
        previews = preview_precision(session, csv_text, CSV_LABEL, app.monitoring, device=chosen, site=site)
        if len(previews) != 1:
            raise ImportError_(f"{CSV_LABEL}: one study (one machine, one site) at a time here")
    except ValueError as exc:
        context["error"] = exc
        return render(request, "qa_devices.html", context, status_code=422)
    study = previews[0].study
    context["preview"] = study
    if action != "save" or study.facility is None:
        return render(request, "qa_devices.html", context, status_code=200 if study.facility else 422)
    try:
        save_precision(app.ctx, actor(user), csv_text, CSV_LABEL, device_id=device, site=site, performed_on=when)
    except ValueError as exc:
        context["error"] = exc
        return render(request, "qa_devices.html", context, status_code=422)
    return RedirectResponse("/qa/devices", status_code=303)


# --------------------------------------------------------------------------- cross-calibration calculator


def _crosscal_kind(kind: str) -> CrossCalKind | None:
    if not kind:
        return None
    if kind not in CROSSCAL_KINDS:
        raise ValueError(f"kind {kind!r} is not phantom or in_vivo")
    return "phantom" if kind == "phantom" else "in_vivo"


def _crosscal_compute(session: Session, app: App, csv_text: str, kind: str, performed_on: str) -> list[CrossCalPreview]:
    """The previews of an uploaded cross-calibration CSV; ValueError (ImportError_ included) for
    a file that cannot be read, with the line and field."""
    if len(csv_text.encode()) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, "cross-calibration file too large (2 MiB at most)")
    when = _optional_day(performed_on)
    return preview_crosscal(session, csv_text, CSV_LABEL, app.monitoring, kind=_crosscal_kind(kind), performed_on=when)


def _crosscal_save(app: App, user: CurrentUser, csv_text: str, kind: str, performed_on: str) -> int:
    """Save what was previewed (recomputed in the saving transaction); how many patients were
    queued for re-evaluation."""
    when = _optional_day(performed_on)
    saved = save_crosscal(app.ctx, actor(user), csv_text, CSV_LABEL, kind=_crosscal_kind(kind), performed_on=when)
    return saved.patients_queued


@router.post("/qa/devices/crosscal", include_in_schema=False)
async def crosscal_upload(
    request: Request,
    session: DbSession,
    app: App,
    user: QaUser,
    kind: Annotated[str, Form()] = "",
    action: Annotated[str, Form()] = "preview",
    performed_on: Annotated[str, Form()] = "",
    csv_text: Annotated[str, Form()] = "",
    file: UploadFile | None = None,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Preview (compute, save nothing) or save an uploaded cross-calibration CSV, the CLI's columns.
    The preview page carries the CSV back in a hidden field, so saving stores exactly what was
    seen; one group that cannot be used (422) and nothing is saved."""
    check_csrf(request, csrf_token)
    csv_text = await _uploaded_csv(file, csv_text, "cross-calibration")
    context = _devices_context(session, app)
    context["crosscal_upload"] = {"kind": kind, "performed_on": performed_on, "csv_text": csv_text}
    try:
        previews = _crosscal_compute(session, app, csv_text, kind, performed_on)
    except ValueError as exc:
        context["crosscal_error"] = exc
        return render(request, "qa_devices.html", context, status_code=422)
    context["crosscal_preview"] = previews
    saveable = all(p.saveable for p in previews)
    if action != "save" or not saveable:
        return render(request, "qa_devices.html", context, status_code=200 if saveable else 422)
    try:
        _crosscal_save(app, user, csv_text, kind, performed_on)
    except ValueError as exc:
        context["crosscal_error"] = exc
        return render(request, "qa_devices.html", context, status_code=422)
    return RedirectResponse(f"/qa/devices#device-{previews[0].device_a.id}", status_code=303)


class CrossCalIn(BaseModel):
    csv_text: str  # the CLI's columns: kind, device_a_serial, device_b_serial, site, subject, bmd_a, bmd_b
    kind: CrossCalKind | None = None  # fills an empty or missing kind column
    performed_on: date | None = None


def _crosscal_api(request: Request, session: Session, app: App, user: CurrentUser, data: CrossCalIn) -> Any:
    if not user.via_token:
        check_csrf(request, request.headers.get("x-csrf-token"))
    performed_on = data.performed_on.isoformat() if data.performed_on else ""
    try:
        return _crosscal_compute(session, app, data.csv_text, data.kind or "", performed_on)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/api/qa/crosscal/preview", tags=["qa"])
def crosscal_preview_api(request: Request, session: DbSession, app: App, user: QaUser, data: CrossCalIn) -> Response:
    """What the cross-calibration calculator shows, computed and not saved: per (kind, machines,
    site) the means, phantom difference and verdict, or the in-vivo regression and generalized
    LSC. 422 when any group cannot be saved (its `error` says why). Session users send the page's
    CSRF token in `X-CSRF-Token`; bearer-token clients need none."""
    previews = _crosscal_api(request, session, app, user, data)
    saveable = all(p.saveable for p in previews)
    body = {"saveable": saveable, "cross_calibrations": [crosscal.preview_json(p) for p in previews]}
    return JSONResponse(body, status_code=200 if saveable else 422)


@router.post("/api/qa/crosscal", tags=["qa"], status_code=201)
def crosscal_save_api(request: Request, session: DbSession, app: App, user: QaUser, data: CrossCalIn) -> Response:
    """Compute and save a cross-calibration CSV (all groups or none, as `dxa crosscal import`);
    the patients scanned on both machines are queued for re-evaluation."""
    previews = _crosscal_api(request, session, app, user, data)
    body: dict[str, Any] = {"cross_calibrations": [crosscal.preview_json(p) for p in previews]}
    if not all(p.saveable for p in previews):
        return JSONResponse({**body, "saveable": False}, status_code=422)
    performed_on = data.performed_on.isoformat() if data.performed_on else ""
    try:
        body["patients_queued"] = _crosscal_save(app, user, data.csv_text, data.kind or "", performed_on)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return JSONResponse({**body, "saveable": True}, status_code=201)
