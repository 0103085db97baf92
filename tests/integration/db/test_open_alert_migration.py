"""Migration page_0008 flags the next scan of every patient with an open alert (the rows written
before the flag existed), and only those, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from db.engine import make_engine
from db.migrate import upgrade
from tests.conftest import create_postgres_database, drop_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('flag') / 'flag.db'}"
        return
    request.getfixturevalue("postgres_server")
    url = create_postgres_database("dxa_test_flag")
    try:
        yield url
    finally:
        drop_postgres_database(url)


def test_the_flag_is_set_from_the_open_alerts(db_url: str) -> None:
    upgrade(db_url, "page_0007_search_bigrams")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for pk, state in ((1, "open"), (2, "acknowledged"), (3, None), (4, "resolved")):
                conn.execute(
                    text(
                        "INSERT INTO patients (id, identifier, issuer, created_at, updated_at)"
                        " VALUES (:pk, :pk, '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"pk": pk},
                )
                conn.execute(
                    text(
                        "INSERT INTO next_scans (patient_id, reason, alerts, z_below_expected, computed_at)"
                        " VALUES (:pk, '', '[]', false, CURRENT_TIMESTAMP)"
                    ),
                    {"pk": pk},
                )
                if state is not None:
                    conn.execute(
                        text(
                            "INSERT INTO alerts (patient_id, code, message, state, raised_at, basis)"
                            " VALUES (:pk, 'x', 'x', :state, CURRENT_TIMESTAMP, '')"
                        ),
                        {"pk": pk, "state": state},
                    )
        upgrade(db_url)
        with engine.connect() as conn:
            flags = dict(conn.execute(text("SELECT patient_id, open_alert FROM next_scans")).tuples().all())
        assert {pk: bool(flag) for pk, flag in flags.items()} == {1: True, 2: False, 3: False, 4: False}
    finally:
        engine.dispose()
