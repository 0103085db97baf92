"""Whether the database answers (`/healthz`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session


def database_answers(session: Session) -> bool:
    session.execute(select(1))
    return True
