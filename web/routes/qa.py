"""QA pages (qa and admin roles only): refused comparisons, machines and precision, ingest."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from db.calibration import PrecisionRepeat
from db.models import Device
from monitor.precision import TechnologistStudy
from services.audit import record_event
from services.crosscal import CROSSCAL_KINDS, CrossCalKind, CrossCalPreview, preview_crosscal, save_crosscal
from services.csv_rows import ImportError_
from services.exports import to_csv
from services.precision import preview_precision, save_precision, study_of
from services.reprocess import reprocess
from web import crosscal, queries
from web.auth import CurrentUser, check_csrf
from web.deps import App, DbSession, QaUser, actor, render
from web.forms import FilterErrors

router = APIRouter()
CSV_LABEL = "CSV"  # what error messages call the uploaded file ("CSV: line 3: field site: …")
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
PRECISION_SITES = ("L1-L4", "L2-L4", "total_hip", "femoral_neck", "radius_33")


# --------------------------------------------------------------------------- refused comparisons

REFUSAL_STATUSES = ("rejected_cross_machine", "rejected_unknown_machine")
REFUSED_COLUMNS = (
    "patient_id",
    "issuer",
    "site",
    "side",
    "reference",
    "from_date",
    "from_device",
    "to_date",
    "to_device",
    "status",
    "reason",
)


@dataclass(frozen=True)
class RefusedFilter:
    """The refused-comparison filters as read from the query (empty fields mean "any")."""

    device: int | None
    start: date | None
    end: date | None
    status: str | None
    year: int | None
    errors: tuple[str, ...]

    @property
    def query(self) -> str:
        """The same filters as a query string: the CSV link downloads exactly what is shown."""
        params = {
            "device": "" if self.device is None else str(self.device),
            "start": self.start.isoformat() if self.start else "",
            "end": self.end.isoformat() if self.end else "",
            "status": self.status or "",
        }
        return urlencode(params)


def read_refused_filter(
    device: str | None, start: str | None, end: str | None, status: str | None, year: str | None
) -> RefusedFilter:
    errors = FilterErrors()
    chosen_year = errors.integer(year, "Year")
    lo, hi = errors.day(start, "From"), errors.day(end, "To")
    if chosen_year is not None and lo is None and hi is None:
        lo, hi = date(chosen_year, 1, 1), date(chosen_year, 12, 31)
    return RefusedFilter(
        device=errors.integer(device, "Machine"),
        start=lo,
        end=hi,
        status=errors.choice(status, REFUSAL_STATUSES, "Reason"),
        year=chosen_year,
        errors=tuple(errors.messages),
    )


def _refused(session: Session, f: RefusedFilter) -> list[queries.RefusedComparison]:
    return queries.refused_comparisons(session, device_pk=f.device, start=f.start, end=f.end, status=f.status)


@router.get("/qa/comparisons", include_in_schema=False)
def refused_page(
    request: Request,
    session: DbSession,
    app: App,
    _: QaUser,
    device: str | None = None,
    start: str | None = None,
    end: str | None = None,
    status: str | None = None,
    year: str | None = None,
) -> Response:
    chosen = read_refused_filter(device, start, end, status, year)
    rows = _refused(session, chosen)
    this_year = app.today().year
    context = {
        "rows": rows,
        "devices": queries.all_devices(session),
        "f": chosen,
        "statuses": REFUSAL_STATUSES,
        "years": list(range(this_year, this_year - 8, -1)),
        "filter_errors": chosen.errors,
    }
    return render(request, "qa_comparisons.html", context)


@router.get("/api/qa/comparisons", tags=["qa"])
def refused_api(
    session: DbSession,
    _: QaUser,
    device: str | None = None,
    start: str | None = None,
    end: str | None = None,
    status: str | None = None,
    year: str | None = None,
) -> dict[str, Any]:
    """Every comparison refused because the two exams were not on one machine (or one had no
    serial), filterable by device id, by the later exam's date (`start`, `end`, or a whole
    `year`) and by `status`. Empty parameters mean no filter; unreadable ones answer 422."""
    chosen = read_refused_filter(device, start, end, status, year)
    if chosen.errors:
        raise HTTPException(422, " ".join(chosen.errors))
    return {"comparisons": [_jsonable(asdict(r)) for r in _refused(session, chosen)]}


@router.get("/qa/comparisons.csv", include_in_schema=False)
def refused_csv(
    session: DbSession,
    app: App,
    user: QaUser,
    device: str | None = None,
    start: str | None = None,
    end: str | None = None,
    status: str | None = None,
    year: str | None = None,
) -> Response:
    """The rows the page shows for the same filters, in the page's column order."""
    chosen = read_refused_filter(device, start, end, status, year)
    rows = _refused(session, chosen)
    record_event(app.ctx, actor(user), "refused_comparisons_exported", None, rows=len(rows), filters=chosen.query)
    body = to_csv(
        [
            (
                r.patient_id,
                r.issuer,
                r.site,
                r.side,
                r.reference,
                r.from_date.isoformat(),
                r.from_device,
                r.to_date.isoformat(),
                r.to_device,
                r.status,
                r.reason,
            )
            for r in rows
        ],
        REFUSED_COLUMNS,
    )
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{_refused_file_name(session, chosen)}"'},
    )


def _refused_file_name(session: Session, f: RefusedFilter) -> str:
    """Says which filters made the file, never a patient:
    refused-comparisons_SN-200457_2018-01-01_to_2018-12-31.csv."""
    parts = ["refused-comparisons"]
    if f.device is not None:
        device = session.get(Device, f.device)
        serial = device.serial if device is not None and device.serial else f"machine-{f.device}"
        parts.append("SN-" + "".join(ch if ch.isalnum() else "-" for ch in serial))
    if f.start or f.end:
        parts.append(f"{f.start.isoformat() if f.start else 'start'}_to_{f.end.isoformat() if f.end else 'now'}")
    if f.status:
        parts.append(f.status)
    return "_".join(parts) + ".csv"


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in data.items()}


# --------------------------------------------------------------------------- machines


def _technologist_checks(
    session: Session, app: App, details: list[queries.DeviceDetail]
) -> dict[int, list[TechnologistStudy]]:
    """Per study, the technologists whose precision exceeds the configured ISCD limit."""
    flagged: dict[int, list[TechnologistStudy]] = defaultdict(list)
    for detail in details:
        for study in detail.studies:
            repeats = [PrecisionRepeat(*r) for r in queries.precision_repeats(session, study.pk)]
            if not repeats:
                continue
            flagged[study.pk].extend(study_of(study.site, repeats, app.monitoring).over_limit)
    return flagged


def _devices_context(session: Session, app: App) -> dict[str, Any]:
    """What the machines page needs besides the calculators' own preview and error."""
    details = queries.device_details(session)
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
    details = queries.device_details(session)
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
                        **_jsonable(asdict(s)),
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
        when = date.fromisoformat(performed_on) if performed_on else None
        previews = preview_precision(session, csv_text, CSV_LABEL, app.monitoring, device=chosen, site=site)
        if len(previews) != 1:
            raise ImportError_(f"{CSV_LABEL}: one study (one machine, one site) at a time here")
    except ValueError as exc:
        context["error"] = str(exc)
        return render(request, "qa_devices.html", context, status_code=422)
    study = previews[0].study
    context["preview"] = study
    if action != "save" or study.facility is None:
        return render(request, "qa_devices.html", context, status_code=200 if study.facility else 422)
    try:
        save_precision(app.ctx, actor(user), csv_text, CSV_LABEL, device_id=device, site=site, performed_on=when)
    except ValueError as exc:
        context["error"] = str(exc)
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
    when = date.fromisoformat(performed_on) if performed_on else None
    return preview_crosscal(session, csv_text, CSV_LABEL, app.monitoring, kind=_crosscal_kind(kind), performed_on=when)


def _crosscal_save(app: App, user: CurrentUser, csv_text: str, kind: str, performed_on: str) -> int:
    """Save what was previewed (recomputed in the saving transaction); how many patients were
    queued for re-evaluation."""
    when = date.fromisoformat(performed_on) if performed_on else None
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
        context["crosscal_error"] = str(exc)
        return render(request, "qa_devices.html", context, status_code=422)
    context["crosscal_preview"] = previews
    saveable = all(p.saveable for p in previews)
    if action != "save" or not saveable:
        return render(request, "qa_devices.html", context, status_code=200 if saveable else 422)
    try:
        _crosscal_save(app, user, csv_text, kind, performed_on)
    except ValueError as exc:
        context["crosscal_error"] = str(exc)
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


# --------------------------------------------------------------------------- ingest


@router.get("/api/qa/ingest", tags=["qa"])
def ingest_api(session: DbSession, _: QaUser, status: str | None = None, limit: int = 200) -> dict[str, Any]:
    """Recently received files with their status and, for quarantined ones, the reason."""
    files = queries.recent_files(session, status=status, limit=min(max(limit, 1), 1000))
    return {"files": [{**_jsonable(asdict(f)), "received_at": f.received_at.isoformat(), "id": f.pk} for f in files]}


def _reprocess(app: App, user: CurrentUser, file_pk: int) -> None:
    if not reprocess(app.ctx, actor(user), file_pk):
        raise HTTPException(404, "no quarantined file with that id")


@router.post("/qa/ingest/{file_pk}/reprocess", include_in_schema=False)
def reprocess_form(
    request: Request, app: App, user: QaUser, file_pk: int, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, csrf_token)
    _reprocess(app, user, file_pk)
    return RedirectResponse("/qa/ingest?notice=File+queued+for+re-processing.", status_code=303)


@router.post("/api/qa/ingest/{file_pk}/reprocess", tags=["qa"], status_code=202)
def reprocess_api(request: Request, app: App, user: QaUser, file_pk: int) -> dict[str, Any]:
    """Queue a quarantined file for ingestion again (after its cause was fixed)."""
    if not user.via_token:
        check_csrf(request, request.headers.get("x-csrf-token"))
    _reprocess(app, user, file_pk)
    return {"queued": file_pk}
