"""QA pages (qa and admin roles only): refused comparisons and received files (the machines page
is `web.routes.qa_devices`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from db.models import Device
from services.audit import record_event
from services.exports import to_csv
from services.reprocess import reprocess
from web.auth import CurrentUser, check_csrf
from web.deps import App, DbSession, QaUser, actor, render
from web.forms import FilterErrors
from web.queries import qa as qa_q

router = APIRouter()


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


def _refused(session: Session, f: RefusedFilter) -> list[qa_q.RefusedComparison]:
    return qa_q.refused_comparisons(session, device_pk=f.device, start=f.start, end=f.end, status=f.status)


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
        "devices": qa_q.all_devices(session),
        "f": chosen,
        "statuses": REFUSAL_STATUSES,
        "years": list(range(this_year, this_year - 8, -1)),
        "filter_errors": chosen.errors,
        "tallies": qa_q.refused_by_machine_and_year(session),
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
    return {"comparisons": [jsonable(asdict(r)) for r in _refused(session, chosen)]}


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


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in data.items()}


# --------------------------------------------------------------------------- ingest


@router.get("/api/qa/ingest", tags=["qa"])
def ingest_api(session: DbSession, _: QaUser, status: str | None = None, limit: int = 200) -> dict[str, Any]:
    """Recently received files with their status and, for quarantined ones, the reason."""
    files = qa_q.recent_files(session, status=status, limit=min(max(limit, 1), 1000))
    return {"files": [{**jsonable(asdict(f)), "received_at": f.received_at.isoformat(), "id": f.pk} for f in files]}


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
