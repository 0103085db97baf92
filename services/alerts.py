"""A clinician acknowledging a patient's alert with a comment: kept in the audit trail, and the
alert stays quiet until an evaluation raises it again on new facts."""

from __future__ import annotations

from db.history import acknowledge_alert
from services.audit import Actor
from services.context import Context


def acknowledge(ctx: Context, actor: Actor, patient_id: int, alert_id: int, comment: str) -> None:
    """`LookupError` when the patient has no such open alert, `ValueError` for an empty comment."""
    with ctx.sessions.begin() as session:
        acknowledge_alert(session, patient_id, alert_id, actor=actor.username, user_id=actor.user_id, comment=comment)
