"""Indexes for the patients list at 100 000 patients.

- patients (identifier, issuer, id): the list pages through patients in identifier order; with
  the id in the index a deep page (OFFSET) is read from the index alone.
- next_scans (due, patient_id) replaces (due): counting overdue patients that also have an open
  alert joins patient ids straight from the index.
- PostgreSQL only, when the pg_trgm extension exists or may be created: trigram indexes on
  lower(identifier) and lower(name), the expressions the list's substring search filters on.
  Without pg_trgm (or on SQLite) the search reads the whole table, as before: slower, same
  answers. They are expression indexes, which autogenerate neither compares nor creates, so
  they live here and not in `db.models`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import DBAPIError

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)
TRIGRAM_INDEXES = {"ix_patients_identifier_trgm": "identifier", "ix_patients_name_trgm": "name"}


def upgrade() -> None:
    op.create_index("ix_patients_identifier_issuer_id", "patients", ["identifier", "issuer", "id"])
    op.create_index("ix_next_scans_due_patient_id", "next_scans", ["due", "patient_id"])
    op.drop_index("ix_next_scans_due", table_name="next_scans")
    if op.get_bind().dialect.name == "postgresql" and _have_pg_trgm():
        for name, column in TRIGRAM_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON patients USING gin (lower({column}) gin_trgm_ops)")


def _have_pg_trgm() -> bool:
    """Create pg_trgm if it is missing and allowed (a trusted extension since PostgreSQL 13: the
    database owner may); a server without it just goes without the search indexes."""
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DBAPIError as exc:
        log.warning("pg_trgm unavailable (%s): the patients search will scan the table", exc.orig)
        return False
    return True


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRIGRAM_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")  # the extension stays: other schemas may use it
    op.create_index("ix_next_scans_due", "next_scans", ["due"])
    op.drop_index("ix_next_scans_due_patient_id", table_name="next_scans")
    op.drop_index("ix_patients_identifier_issuer_id", table_name="patients")
