"""`INSERT … ON CONFLICT DO NOTHING RETURNING`, the one statement a find-or-create needs.

A savepoint around a plain INSERT (the portable way to survive a unique violation) costs three
round trips (SAVEPOINT, INSERT, RELEASE) where this costs one, on PostgreSQL and SQLite alike. On
PostgreSQL a conflicting row that another transaction inserted and has not committed yet is waited
for: once it commits, this insert does nothing (and the caller reads that row); if it rolls back,
this insert goes ahead. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

_T = TypeVar("_T")


def insert_unless_exists(
    session: Session, entity: type[_T], values: Mapping[str, Any], conflict: Sequence[str]
) -> _T | None:
    """Insert one `entity` row and return it (persistent in `session`), or None when a row with
    the same `conflict` key exists already. `conflict` must name a unique constraint's columns."""
    dialect = session.get_bind().dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(entity).values(**values).on_conflict_do_nothing(index_elements=list(conflict))
    elif dialect == "sqlite":
        stmt = sqlite.insert(entity).values(**values).on_conflict_do_nothing(index_elements=list(conflict))
    else:  # any other backend: the portable savepoint
        try:
            with session.begin_nested():
                return session.scalars(insert(entity).values(**values).returning(entity)).one()
        except IntegrityError:
            return None
    return session.scalars(stmt.returning(entity)).one_or_none()
