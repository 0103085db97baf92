"""A two-letter patients search through an index (issue 13).

The list's search is a substring of lower(identifier) or lower(name); the trigram indexes of 0002
serve a search of three characters or more, and one of two ("li", "wu": common family names)
read all 100 000 patients (60-150 ms on a loaded machine). PostgreSQL only: a GIN index over the
two-letter pieces of the identifier and name, `dxa_bigrams(identifier, name)`; the search asks it for the
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

# The pieces of lower(identifier || ' ' || name): a substring of either column is one of them.
# (db/models.py declares the index; web/queries/patient_list.py asks it as `dxa_bigrams(identifier,
# name) @> ARRAY[...]`, the expression written as here, so that the planner matches it.)
BIGRAMS = """
CREATE FUNCTION dxa_bigrams(identifier varchar, name varchar) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(DISTINCT substr(v, i, 2)), '{}')
    FROM (SELECT lower(identifier || ' ' || coalesce(name, '')) AS v) AS s, generate_series(1, length(v) - 1) AS i
$$"""
INDEX = "CREATE INDEX ix_patients_search_bigrams ON patients USING gin (dxa_bigrams(identifier, name))"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(BIGRAMS)
        op.execute(INDEX)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_patients_search_bigrams")
        op.execute("DROP FUNCTION IF EXISTS dxa_bigrams(varchar, varchar)")
