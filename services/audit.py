"""Who did what: the audit trail every use case writes in its own transaction (the pages' views
in their read transaction where that is safe, `record_read`).

The actor is a plain value (`Actor`), so the web app (a signed-in user), the command line
(`CLI`) and the workers name themselves the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.accounts import append_audit
from services.context import Context


@dataclass(frozen=True)
class Actor:
    username: str
    user_id: int | None = None


CLI = Actor("cli")
ANONYMOUS = Actor("anonymous")


def record(session: Session, actor: Actor, action: str, patient_id: int | None = None, **detail: Any) -> None:
    """Add an audit event to the caller's transaction. `detail` holds no patient data."""
    append_audit(
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


def record_read(
    ctx: Context, reads: Session, actor: Actor, action: str, patient_id: int | None = None, **detail: Any
) -> None:
    """An audit event for what an adapter has just read and is about to show (a patient viewed,
    a list exported), committed before it is shown.

    On PostgreSQL (the web app's read sessions are of the same database as the use cases') the
    event is written in the transaction of `reads` and committed with it: no second connection,
    no second transaction, one INSERT and one COMMIT on a connection already held (the patient
    page's largest cost after its reads, issue 13). On SQLite a page reads in a deferred
    transaction that may not take the write lock after reading, so the event gets a short
    transaction of its own, as `record_event`. Either way the event is durable before the caller
    answers; a failure raises and nothing is shown."""
    if reads.get_bind().dialect.name == "postgresql":
        record(reads, actor, action, patient_id, **detail)
        reads.commit()
    else:
        record_event(ctx, actor, action, patient_id, **detail)
