"""Run the Alembic migrations from code: `dxa serve`, the compose `migrate` service and the tests
call `upgrade(url)`; no alembic.ini has to be found on disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from db.engine import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | URL | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # Handed over as an attribute, not a main option: ConfigParser would choke on '%' in passwords.
        config.attributes["url"] = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
    return config


def _run_with_engine(engine: Engine, action: str, revision: str) -> None:
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        if action == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
        connection.commit()


def upgrade(url: str | URL | Engine, revision: str = "head") -> None:
    """Bring the database at `url` (or behind an engine) up to `revision`."""
    if isinstance(url, Engine):
        _run_with_engine(url, "upgrade", revision)
        return
    engine = make_engine(url)
    try:
        _run_with_engine(engine, "upgrade", revision)
    finally:
        engine.dispose()


def downgrade(url: str | URL | Engine, revision: str) -> None:
    if isinstance(url, Engine):
        _run_with_engine(url, "downgrade", revision)
        return
    engine = make_engine(url)
    try:
        _run_with_engine(engine, "downgrade", revision)
    finally:
        engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_up_to_date(engine: Engine) -> bool:
    """For a health check or a worker refusing to start on an old schema."""
    return current_revision(engine) == head_revision()
