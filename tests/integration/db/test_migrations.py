"""The migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect
from sqlalchemy.exc import IntegrityError

from db.engine import make_engine, session_factory
from db.migrate import current_revision, downgrade, head_revision, is_up_to_date, upgrade
from db.models import Base, Measurement, utcnow
from db.reports import store_report
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.integration.db.helpers import report, site


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('mig') / 'empty.db'}"
        return
    request.getfixturevalue("postgres_server")
    url = create_postgres_database("dxa_test_mig")
    try:
        yield url
    finally:
        drop_postgres_database(url)


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "skipping expression-based index": checked separately below
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_gives_the_models_schema(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    assert _diff(empty_db_url) == []
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert is_up_to_date(engine)
        names = set(inspect(engine).get_table_names())
        assert {
            "patients",
            "devices",
            "exams",
            "measurements",
            "source_files",
            "jobs",
            "audit_events",
        } <= names
    finally:
        engine.dispose()


def test_expression_index_makes_null_sides_unique(empty_db_url: str) -> None:
    """Autogenerate cannot compare the coalesce() index, so prove it works instead."""
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with session_factory(engine)() as session:
            exam = store_report(session, report(site("L1-L4", 0.9)))
            session.commit()
            values = {"exam_id": exam.exam.id, "site": "L1-L4", "side": None, "bmd": 0.91, "provenance": {}}
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(Measurement), [{**values, "created_at": utcnow()}])
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    downgrade(empty_db_url, "base")
    engine = make_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(empty_db_url)
    upgrade(empty_db_url)  # a second run is a no-op
    assert _diff(empty_db_url) == []
