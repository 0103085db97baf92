"""Who did what: the audit trail every use case writes in its own transaction.

The actor is a plain value (`Actor`), so the web app (a signed-in user), the command line
(`CLI`) and the workers name themselves the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.accounts import record_audit
from services.context import Context


@dataclass(frozen=True)
class Actor:
    username: str
    user_id: int | None = None


CLI = Actor("cli")
ANONYMOUS = Actor("anonymous")


def record(session: Session, actor: Actor, action: str, patient_id: int | None = None, **detail: Any) -> None:
    """Add an audit event to the caller's transaction. `detail` holds no patient data."""
    record_audit(
        session,
        actor=actor.username,
        user_id=actor.user_id,
        action=action,
        patient_id=patient_id,
        detail=detail,
    )


def record_event(ctx: Context, actor: Actor, action: str, patient_id: int | None = None, **detail: Any) -> None:
    """An audit event in a transaction of its own (a page viewed, a list exported)."""
    with ctx.sessions.begin() as session:
        record(session, actor, action, patient_id, **detail)
