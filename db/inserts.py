"""`INSERT … ON CONFLICT DO NOTHING RETURNING`, the one statement a find-or-create needs.

A savepoint around a plain INSERT (the portable way to survive a unique violation) costs three
round trips (SAVEPOINT, INSERT, RELEASE) where this costs one, on PostgreSQL and SQLite alike. On
PostgreSQL a conflicting row that another transaction inserted and has not committed yet is waited
for: once it commits, this insert does nothing (and the caller reads that row); if it rolls back,
this insert goes ahead. Nothing here commits.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table, insert, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

_T = TypeVar("_T")


def insert_unless_exists(
    session: Session, entity: type[_T], values: Mapping[str, Any], conflict: Sequence[str]
) -> _T | None:
    """Insert one `entity` row and return it (persistent in `session`), or None when a row with
    the same `conflict` key exists already. `conflict` must name a unique constraint's columns."""
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        session.flush()  # what the ORM's autoflush would do before a statement
        stmt = _statement(dialect, inspect(entity).local_table, tuple(conflict))
        row = session.connection().execute(stmt, dict(values)).one_or_none()
        return None if row is None else _attached(session, entity, row._asdict())
    try:  # any other backend: the portable savepoint
        with session.begin_nested():
            return session.scalars(insert(entity).values(**values).returning(entity)).one()
    except IntegrityError:
        return None


@functools.cache
def _statement(dialect: str, table: Table, conflict: tuple[str, ...]) -> Any:
    """A Core statement, built once (the values are bound at execution): through the ORM the same
    insert cost two to three times as much (a new cache key and an ORM bulk step each call)."""
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=list(conflict)).returning(*table.c)


def _attached(session: Session, entity: type[_T], row: dict[str, Any]) -> _T:
    """The inserted row as a persistent object of `session`, as a query would have loaded it (its
    relationships load when first read)."""
    mapper = inspect(entity)
    obj = entity(**{mapper.get_property_by_column(mapper.local_table.c[name]).key: v for name, v in row.items()})
    for relationship in mapper.relationships:  # nothing refers to a row inserted just now
        if relationship.uselist:
            set_committed_value(obj, relationship.key, [])
    make_transient_to_detached(obj)
    stale = session.identity_map.get(inspect(obj).key)
    if stale is not None:  # a row of a savepoint rolled back had this key: the new row has it now
        session.expunge(stale)
    session.add(obj)
    return obj
