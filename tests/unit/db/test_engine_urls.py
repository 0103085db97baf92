from __future__ import annotations

import pytest

from db.converters import device_identity_key, sanitise_name
from db.engine import make_engine, normalise_url


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+psycopg"),
        ("postgres://u@h/d", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_postgres_urls_mean_psycopg3(given: str, driver: str) -> None:
    assert normalise_url(given).drivername == driver


def test_postgres_pool_is_pre_pinged() -> None:
    engine = make_engine("postgresql://u:p%40ss@127.0.0.1:1/d")  # no connection is made
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.pool._pre_ping
        assert engine.url.password == "p@ss"
    finally:
        engine.dispose()


def test_identity_keys_ignore_case_and_spacing_but_not_serials() -> None:
    assert device_identity_key("HOLOGIC", "Horizon A", "301234M") == device_identity_key(
        "Hologic", " horizon  A", "301234 m"
    )
    assert device_identity_key("HOLOGIC", "Horizon A", "301234M") != device_identity_key("HOLOGIC", "Horizon A", "1")
    assert device_identity_key("HOLOGIC", "Horizon A", None).endswith("|")


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\inbox\\a\x07.dcm", "a.dcm"),
        ("", "(unnamed)"),
        ("x" * 300, "x" * 255),
    ],
)
def test_names_are_sanitised(name: str, clean: str) -> None:
    assert sanitise_name(name) == clean
