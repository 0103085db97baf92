"""Acknowledging a patient's alert: a clinician says why, the audit trail keeps it, and the
alert stays quiet until the evaluation raises it on new facts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from services.alerts import acknowledge
from web.auth import CurrentUser, check_csrf
from web.deps import App, DbSession, User, actor
from web.filters import patient_url
from web.routes.patients import PatientRoute, load_patient

router = APIRouter(route_class=PatientRoute)


def _acknowledge(app: App, user: CurrentUser, patient_pk: int, alert_id: int, comment: str) -> None:
    try:
        acknowledge(app.ctx, actor(user), patient_pk, alert_id, comment)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/patients/{patient_id}/alerts/{alert_id}/acknowledge", include_in_schema=False)
def acknowledge_form(
    request: Request,
    session: DbSession,
    app: App,
    user: User,
    patient_id: str,
    alert_id: int,
    comment: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    issuer: str | None = None,
) -> Response:
    check_csrf(request, csrf_token)
    patient = load_patient(session, patient_id, issuer)
    _acknowledge(app, user, patient.id, alert_id, comment)
    notice = "Alert acknowledged; it returns if something new happens."
    return RedirectResponse(patient_url(patient.identifier, patient.issuer, notice=notice), status_code=303)


class AcknowledgeIn(BaseModel):
    comment: str


@router.post("/api/patients/{patient_id}/alerts/{alert_id}/acknowledge", tags=["patients"])
def acknowledge_api(
    request: Request,
    session: DbSession,
    app: App,
    user: User,
    patient_id: str,
    alert_id: int,
    data: AcknowledgeIn,
    issuer: str | None = None,
) -> dict[str, Any]:
    """Acknowledge an open alert with a comment (audited). Session users send the page's CSRF
    token in `X-CSRF-Token`; bearer-token clients need none."""
    if not user.via_token:
        check_csrf(request, request.headers.get("x-csrf-token"))
    patient = load_patient(session, patient_id, issuer)
    _acknowledge(app, user, patient.id, alert_id, data.comment)
    return {"acknowledged": alert_id}
