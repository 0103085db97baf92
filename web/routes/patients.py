"""Patients list, one patient (charts, comparisons, next scan, therapies) and its exports."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import asdict
from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from db.export import export_patient
from db.models import Patient
from db.patients import AmbiguousPatient, find_patient
from monitor.drugs import UnknownAgent
from services import therapies
from services.audit import record_read
from services.exports import export_one
from web import alerts as web_alerts
from web import cells, charts, i18n, patient_view, report
from web.auth import check_csrf
from web.deps import (
    App,
    DbSession,
    Services,
    User,
    activate_request_locale,
    actor,
    clinical_user,
    close_read_session,
    open_read_session,
    render,
    services,
)
from web.filters import patient_url
from web.forms import FilterErrors, Sentence
from web.i18n import N_
from web.queries import patient as patient_q
from web.queries import patient_list as patient_list_q

log = logging.getLogger(__name__)


def _match_raw(route: BaseRoute, matches: Callable[[Scope], tuple[Match, Scope]], scope: Scope) -> tuple[Match, Scope]:
    """`matches` against the raw path (see `PatientRoute`)."""
    raw = scope.get("raw_path") if scope["type"] == "http" else None
    if not raw or "patient_id" not in getattr(route, "param_convertors", {}):
        return matches(scope)
    match, child = matches({**scope, "path": raw.decode("latin-1")})
    if match is not Match.NONE:
        params = dict(child["path_params"])
        params["patient_id"] = unquote_to_bytes(params["patient_id"]).decode("utf-8", "replace")
        child["path_params"] = params
    return match, child


class PatientRoute(APIRoute):
    """Matches `{patient_id}` against the raw, still percent-encoded request path.

    Identifiers may contain "/" ("IPP/123"); links send it as %2F, but Starlette routes on the
    decoded path, where it can no longer be told from a separator: `/patients/AB%2F123` would be
    a 404 and `/api/patients/x%2Ftrend` the trend of patient "x". In the raw path every "/" is
    a separator, so `{patient_id}` is exactly one segment, decoded here after matching (so
    "%252F" gives a literal "%2F"). Servers without `raw_path` fall back to the usual matching.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return _match_raw(self, super().matches, scope)


class PatientPageRoute(Route):
    """The patient page's route: a plain Starlette route, matched as `PatientRoute` matches.

    The page clinicians open most skips FastAPI's per-request machinery (dependency solving,
    parameter validation, exit stacks, a worker thread per dependency), which cost it more than
    its queries (issue 13). It does by hand what the dependencies did: the read session
    (`DbSession`), the sign-in and role check (`User`: `clinical_user`, same check, same
    redirects and 403) and its two query parameters, in one worker thread (the drawing in a
    second, beside the audit write: `_patient_page`); `web.app.Dashboard` serves it without
    FastAPI's middleware stack. GET only: a HEAD would record a view nobody saw (Starlette adds
    HEAD to a GET route; FastAPI's did not)."""

    def __init__(self, path: str, endpoint: Callable[..., Any]) -> None:
        super().__init__(path, endpoint, methods=["GET"], include_in_schema=False)
        self.methods = {"GET"}

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return _match_raw(self, super().matches, scope)


router = APIRouter(route_class=PatientRoute)


def load_detail(session: Session, patient_id: str, issuer: str | None) -> patient_q.PatientDetail:
    """The patient with everything its page shows (one statement on PostgreSQL); 404 and 409 as
    `load_patient`."""
    try:
        detail = patient_q.read_patient(session, patient_id, issuer)
    except AmbiguousPatient as exc:
        raise HTTPException(409, f"identifier used by several issuers; add ?issuer= one of {exc.issuers}") from exc
    if detail is None:
        raise HTTPException(404, "no such patient")
    return detail


def load_patient(session: Session, patient_id: str, issuer: str | None) -> Patient:
    try:
        patient = find_patient(session, patient_id, issuer)
    except AmbiguousPatient as exc:
        raise HTTPException(409, f"identifier used by several issuers; add ?issuer= one of {exc.issuers}") from exc
    if patient is None:
        raise HTTPException(404, "no such patient")
    return patient


def _summary_json(s: patient_list_q.PatientSummary) -> dict[str, Any]:
    data = asdict(s)
    data.pop("pk")
    for key in ("last_exam", "next_due"):
        data[key] = data[key].isoformat() if data[key] else None
    data["changes"] = [c.as_json() for c in s.changes]
    return data


# --------------------------------------------------------------------------- list


def _list_filter(q: str, overdue: str | None, alerts: str | None, page: str | None) -> tuple[str, bool, bool, int]:
    """Empty or unreadable list parameters fall back to their defaults (a list never 422s)."""
    errors = FilterErrors()
    number = errors.integer(page, "Page")
    return q, errors.flag(overdue, False), errors.flag(alerts, False), max(number or 1, 1)


@router.get("/patients", include_in_schema=False)
def patients_page(
    request: Request,
    session: DbSession,
    app: App,
    _: User,
    q: str = "",
    overdue: str | None = None,
    alerts: str | None = None,
    page: str | None = None,
) -> Response:
    q, chosen_overdue, chosen_alerts, chosen_page = _list_filter(q, overdue, alerts, page)
    rows, total = patient_list_q.list_patients(
        session, today=app.today(), q=q, overdue=chosen_overdue, alerts=chosen_alerts, page=chosen_page
    )
    pages = max(1, -(-total // patient_list_q.PAGE_SIZE))
    context = {
        "rows": rows,
        "total": total,
        "q": q,
        "overdue": chosen_overdue,
        "alerts": chosen_alerts,
        "page": chosen_page,
        "pages": pages,
    }
    return render(request, "patients.html", context)


@router.get("/api/patients", tags=["patients"])
def patients_api(
    session: DbSession,
    app: App,
    _: User,
    q: str = "",
    overdue: str | None = None,
    alerts: str | None = None,
    page: str | None = None,
) -> dict[str, Any]:
    """Patients matching an identifier or name, with last exam, WHO category, latest comparison
    per primary site, next scan due and open alerts; `overdue` and `alerts` filter."""
    q, chosen_overdue, chosen_alerts, chosen_page = _list_filter(q, overdue, alerts, page)
    rows, total = patient_list_q.list_patients(
        session, today=app.today(), q=q, overdue=chosen_overdue, alerts=chosen_alerts, page=chosen_page
    )
    return {
        "total": total,
        "page": chosen_page,
        "page_size": patient_list_q.PAGE_SIZE,
        "patients": [_summary_json(r) for r in rows],
    }


# --------------------------------------------------------------------------- one patient


def _patient_context(app: Services, detail: patient_q.PatientDetail) -> dict[str, Any]:
    tables = patient_view.site_tables(detail, app.monitoring)
    span = charts.time_span(detail)
    keys = [(t.site, t.side) for t in tables]
    drawn = {c.key: c for c in charts.build_charts(detail, keys=keys, span=span)}
    extra_spine = charts.build_charts(
        detail, keys=[(s, None) for s in patient_view.other_spine_sets(detail)], span=span
    )
    comparisons = sorted(
        detail.comparisons, key=lambda c: (_site_rank(c.site), c.site, c.side or "", c.to_date, c.reference)
    )
    return {
        "p": detail,
        "alerts": web_alerts.alert_views(detail.live_alerts),
        "tables": tables,
        "charts": drawn,
        "extra_spine": extra_spine,
        "legend": charts.legend(detail),
        "lsc_text": patient_view.LSC_SOURCE_TEXT,
        # drawn only when the page shows it (a patient with therapies)
        "timeline": charts.render_timeline(detail.therapies, detail.exams, app.today(), span=span)
        if detail.therapies
        else "",
        "comparisons": comparisons,
        "refused": [c for c in comparisons if c.refused],
        "ocr_exams": {e.exam_id for e in detail.exams if e.source == "ocr"},
        "change": cells.change,
        "lsc": cells.lsc,
        "drug": cells.drug,
        "exam_rows": cells.exam_rows,
        "comparison_rows": cells.comparison_rows,
    }


def _site_rank(site: str) -> int:
    if site.startswith("L"):
        return 0
    return {"total_hip": 1, "femoral_neck": 2, "radius_33": 3}.get(site, 4)


async def patient_page(request: Request) -> Response:
    """One patient's page. Everything it does that waits or computes (the sign-in check, the
    read, the audit event) runs in one worker thread, the drawing in a second (`_patient_page`)."""
    app = services(request)
    session = open_read_session(request)
    try:
        query = request.query_params
        patient_id = request.path_params["patient_id"]
        run = contextvars.copy_context().run  # as run_in_threadpool: the request's context goes along
        return await asyncio.get_running_loop().run_in_executor(
            _PAGES, run, _patient_page, request, session, app, patient_id, query.get("issuer"), query.get("notice")
        )
    finally:
        await close_read_session(request, session)


PAGE_ROUTE = PatientPageRoute("/patients/{patient_id}", patient_page)


def _patient_page(
    request: Request, session: Session, app: Services, patient_id: str, issuer: str | None, notice: str | None
) -> Response:
    if session.get_bind().dialect.name == "postgresql":
        # Statements commit as they run: no BEGIN and no COMMIT round trips, the audit event
        # durable when its INSERT returns (each read is one statement, under READ COMMITTED a
        # transaction would have given them no more consistent a view).
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    user = clinical_user(request, session)
    detail = load_detail(session, patient_id, issuer)
    # The page is drawn in another thread while this one writes the audit event: the event's
    # commit waits for the disk (a large share of a page's time, issue 13) and the drawing needs
    # nothing from it. This thread starts the INSERT (it holds the GIL only until the statement
    # is sent, then the drawing has it); the page is answered only once both are done, so a
    # view is durably recorded before anything of it is sent, and a failed write shows nothing.
    drawing = _DRAWING.submit(contextvars.copy_context().run, _draw_page, request, app, detail, notice)
    try:
        record_read(app.ctx, session, actor(user), "patient_viewed", detail.pk, via="page")
    except BaseException:
        futures.wait([drawing])  # the page is thrown away; the request's objects stay with this thread
        raise
    return drawing.result()


def _draw_page(request: Request, app: Services, detail: patient_q.PatientDetail, notice: str | None) -> Response:
    activate_request_locale(request)  # the charts and tables are worded before the template renders
    context = _patient_context(app, detail)
    return render(request, "patient.html", {**context, "notice": notice, "error": None})


# The threads that serve patient pages (`patient_page`), handed each page straight through the
# event loop's executor call: anyio's worker-thread call (`run_in_threadpool`, for every other
# route) costs a page several times as much on the event loop (its task lookups, capacity limiter
# and cancel scope). As many as anyio's default limit of threads.
_PAGES = futures.ThreadPoolExecutor(max_workers=40, thread_name_prefix="page")

# Threads that draw patient pages (`_patient_page`); as many as the pages the server's worker
# threads can have open at once would be many more than two cores draw at a time.
_DRAWING = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="page-drawing")


@router.get("/api/patients/{patient_id}", tags=["patients"])
def patient_api(session: DbSession, app: App, user: User, patient_id: str, issuer: str | None = None) -> dict[str, Any]:
    """The docs/architecture.md, "Exports" export object, plus name, WHO category, therapies and open alerts."""
    patient = load_patient(session, patient_id, issuer)
    detail = patient_q.patient_detail(session, patient)
    nxt = detail.next_scan
    answer = {
        **export_patient(session, patient.id),
        "issuer": detail.issuer,
        "name": detail.name,
        "who_category": nxt.who_category if nxt else None,
        "z_below_expected": nxt.z_below_expected if nxt else False,
        "therapies": [
            {
                "id": t.pk,
                "agent": t.agent,
                "drug_class": t.drug_class,
                "start_date": t.start.isoformat(),
                "stop_date": t.stop.isoformat() if t.stop else None,
                "glucocorticoid": t.glucocorticoid,
            }
            for t in detail.therapies
        ],
        "open_alerts": list(detail.open_alerts),
    }
    record_read(app.ctx, session, actor(user), "patient_viewed", patient.id, via="api")
    return answer


@router.get("/api/patients/{patient_id}/trend", tags=["patients"])
def trend_api(session: DbSession, app: App, user: User, patient_id: str, issuer: str | None = None) -> dict[str, Any]:
    """BMD per monitoring site over time, split into same-machine segments (never joined across
    machines); T-scores are per exam and not a trend."""
    detail = load_detail(session, patient_id, issuer)
    record_read(app.ctx, session, actor(user), "patient_viewed", detail.pk, via="trend_api")
    return {
        "patient_id": detail.patient_id,
        "sites": [
            {
                "site": chart.site,
                "side": chart.side,
                "label": chart.title,
                "points": [
                    {
                        "exam_id": p.exam_id,
                        "date": p.date.isoformat(),
                        "bmd": p.bmd,
                        "t_score": p.t_score,
                        "machine": p.machine_label,
                        "segment": p.segment,
                        "vs_baseline_percent": p.baseline.percent_change if p.baseline else None,
                        "lsc_g_cm2": p.baseline.lsc_g_cm2 if p.baseline else None,
                        "significance": p.significance,
                        "note": p.note or None,
                    }
                    for p in chart.points
                ],
            }
            for chart in charts.build_charts(detail, draw=False)
        ],
    }


@router.get("/api/patients/{patient_id}/export", tags=["patients"])
def export_api(
    session: DbSession,
    app: App,
    user: User,
    patient_id: str,
    format: Annotated[Literal["json", "csv", "fhir"], Query()] = "json",
    issuer: str | None = None,
) -> Response:
    """One patient as the JSON export object, a CSV of its comparisons (one row per comparison, as
    `dxa export --format csv`), or a FHIR R4 Bundle."""
    patient = load_patient(session, patient_id, issuer)
    out = export_one(app.ctx, actor(user), patient.id, format, app.today())
    if isinstance(out.body, dict):
        return JSONResponse(out.body, headers=_attachment(out.filename))
    return Response(out.body, media_type=out.media_type, headers=_attachment(out.filename))


@router.get("/patients/{patient_id}/report.pdf", include_in_schema=False)
def report_pdf(
    request: Request,
    session: DbSession,
    app: App,
    user: User,
    patient_id: str,
    issuer: str | None = None,
    paper: str = "",
) -> Response:
    """The printable report in the user's language, on A4 or US Letter (`paper`; by default the
    one of the user's region), audited as an export."""
    activate_request_locale(request)
    chosen = paper if paper in report.PAPERS else i18n.paper()
    patient = load_patient(session, patient_id, issuer)
    detail = patient_q.patient_detail(session, patient)
    body = report.render_report(detail, web_alerts.alert_views(detail.live_alerts), app.monitoring, app.today(), chosen)
    record_read(
        app.ctx,
        session,
        actor(user),
        "patient_exported",
        patient.id,
        format="pdf",
        paper=chosen,
        language=i18n.current(),
    )
    name = f"dxa-report-{app.today().isoformat()}-{chosen}.pdf"
    return Response(body, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'})


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


# --------------------------------------------------------------------------- therapies


class TherapyIn(BaseModel):
    agent: str
    start_date: date
    stop_date: date | None = None


@router.post("/patients/{patient_id}/therapies", include_in_schema=False)
def add_therapy_form(
    request: Request,
    session: DbSession,
    app: App,
    user: User,
    patient_id: str,
    agent: Annotated[str, Form()],
    start_date: Annotated[str, Form()],
    stop_date: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    issuer: str | None = None,
) -> Response:
    check_csrf(request, csrf_token)
    patient = load_patient(session, patient_id, issuer)
    try:
        start = date.fromisoformat(start_date)
        stop = date.fromisoformat(stop_date) if stop_date else None
        warning = therapies.add_therapy(app.ctx, actor(user), patient.id, agent, start, stop)
    except (UnknownAgent, ValueError) as exc:
        activate_request_locale(request)
        context = _patient_context(app, patient_q.patient_detail(session, patient))
        return render(
            request, "patient.html", {**context, "notice": None, "error": therapy_error(exc)}, status_code=422
        )
    notice = warning or "Therapy saved; the next scan date has been recalculated."
    return RedirectResponse(_patient_url(patient, notice), status_code=303)


@router.post("/patients/{patient_id}/therapies/{therapy_pk}/stop", include_in_schema=False)
def stop_therapy_form(
    request: Request,
    session: DbSession,
    app: App,
    user: User,
    patient_id: str,
    therapy_pk: int,
    stop_date: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    issuer: str | None = None,
) -> Response:
    check_csrf(request, csrf_token)
    patient = load_patient(session, patient_id, issuer)
    try:
        stop = date.fromisoformat(stop_date)
        warning = therapies.stop_therapy(app.ctx, actor(user), patient.id, therapy_pk, stop)
    except LookupError:
        raise HTTPException(404, "no such therapy") from None
    except (UnknownAgent, ValueError) as exc:
        activate_request_locale(request)
        context = _patient_context(app, patient_q.patient_detail(session, patient))
        return render(
            request, "patient.html", {**context, "notice": None, "error": therapy_error(exc)}, status_code=422
        )
    return RedirectResponse(
        _patient_url(patient, warning or "Therapy stopped; the next scan date has been recalculated."),
        status_code=303,
    )


@router.post("/api/patients/{patient_id}/therapies", tags=["patients"], status_code=201)
def add_therapy_api(
    request: Request,
    session: DbSession,
    app: App,
    user: User,
    patient_id: str,
    data: TherapyIn,
    issuer: str | None = None,
) -> dict[str, Any]:
    """Add a therapy (agent mapped to its drug class) and re-evaluate the patient. Session users
    send the page's CSRF token in `X-CSRF-Token`; bearer-token clients need none."""
    if not user.via_token:
        check_csrf(request, request.headers.get("x-csrf-token"))
    patient = load_patient(session, patient_id, issuer)
    try:
        warning = therapies.add_therapy(app.ctx, actor(user), patient.id, data.agent, data.start_date, data.stop_date)
    except (UnknownAgent, ValueError) as exc:
        raise HTTPException(422, str(exc)) from exc
    session.rollback()  # end the read transaction: the answer must see the re-evaluation
    return {"next_scan": export_patient(session, patient.id)["next_scan"], "warning": warning}


def therapy_error(exc: ValueError) -> Sentence:
    """A therapy form's refusal in the reader's language (the English text stays the API's)."""
    if isinstance(exc, UnknownAgent):
        if exc.detail == "empty agent":
            return Sentence(N_("Enter the agent (a generic or brand name, in English or Chinese)."))
        if exc.detail.startswith("agent names more than one drug class"):
            return Sentence(
                N_("“%(agent)s” names more than one drug class: enter one drug per therapy."), agent=exc.agent
            )
        return Sentence(
            N_("“%(agent)s” is not an osteoporosis agent we know: use a generic or brand name, in English or Chinese."),
            agent=exc.agent,
        )
    return Sentence(N_("Check the dates: YYYY-MM-DD, and a stop date not before the start."))


def _patient_url(patient: Patient, notice: str) -> str:
    return patient_url(patient.identifier, patient.issuer, notice=notice)
