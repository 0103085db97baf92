"""The migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from db.engine import make_engine
from db.migrate import current_revision, downgrade, head_revision, is_up_to_date, upgrade
from db.models import Base
from tests.conftest import create_postgres_database, drop_postgres_database


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
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
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
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO patients (id, identifier, issuer, created_at, updated_at) VALUES (1, 'x', '', :t, :t)"
                ),
                {"t": "2020-01-01 00:00:00"},
            )
            conn.execute(
                text(
                    "INSERT INTO devices (id, manufacturer, model, serial, identity_key, model_key, identity_strength,"
                    " software_versions, created_at, updated_at) VALUES (1, 'm', 'n', NULL, 'm|n|', 'm|n', 'weak', '[]', :t, :t)"
                ),
                {"t": "2020-01-01 00:00:00"},
            )
            conn.execute(
                text(
                    "INSERT INTO exams (id, patient_id, device_id, exam_date, scan_types, created_at, updated_at)"
                    " VALUES (1, 1, 1, '2020-01-01', '[]', :t, :t)"
                ),
                {"t": "2020-01-01 00:00:00"},
            )
            insert = text(
                "INSERT INTO measurements (exam_id, site, side, bmd, provenance, created_at)"
                " VALUES (1, 'L1-L4', NULL, 0.9, '{}', '2020-01-01 00:00:00')"
            )
            conn.execute(insert)
        with pytest.raises(Exception, match="(?i)unique|duplicate"), engine.begin() as conn:
            conn.execute(insert)
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
