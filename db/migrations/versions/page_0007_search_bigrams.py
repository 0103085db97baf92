"""A two-letter patients search through an index (issue 13).

The list's search is a substring of lower(identifier) or lower(name); the trigram indexes of 0002
serve a search of three characters or more, and one of two ("li", "wu": common family names)
read all 100 000 patients (60-150 ms on a loaded machine). PostgreSQL only: a GIN index over the
two-letter pieces of the identifier and name, `dxa_bigrams(...)`; the search asks it for the
patients whose pieces contain the query (never missing a match: a substring of either column is
one of the pieces) and keeps its exact condition beside it. SQLite searches as before.

Revision ID: page_0007_search_bigrams
Revises: ocr_0006_scans
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "page_0007_search_bigrams"
down_revision: str | None = "ocr_0006_scans"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# web/queries/patient_list.py writes the very same expression (the planner matches it as written)
BIGRAMS = (
    "CREATE FUNCTION dxa_bigrams(value text) RETURNS text[] LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS"
    " $$ SELECT coalesce(array_agg(DISTINCT substr(value, i, 2)), '{}')"
    " FROM generate_series(1, length(value) - 1) AS i $$"
)
INDEX = (
    "CREATE INDEX ix_patients_search_bigrams ON patients"
    " USING gin (dxa_bigrams(lower(identifier || ' ' || coalesce(name, ''))))"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(BIGRAMS)
        op.execute(INDEX)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_patients_search_bigrams")
        op.execute("DROP FUNCTION IF EXISTS dxa_bigrams(text)")
