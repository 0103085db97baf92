"""A batch stored in one go (issue 13: no savepoint per file, its patients locked or created in one
statement, its files' rows and new measurements written in one statement each at its end) leaves
exactly the rows the careful way leaves (a savepoint per file, each file's rows at once), on SQLite
and PostgreSQL: with re-drops, variants, UID conflicts and re-encodings of an instance in the same
batch as the instance (whose rows are not written yet when the copies come)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

import services.ingestion
from db.migrate import upgrade
from db.models import Base
from services.context import Context, build_context
from services.intake import intake_many
from services.runner import run_batch
from settings import Settings
from tests.integration.pipeline.support import (
    SAMPLES,
    BatchFile,
    drop,
    load_samples,
    make_batch,
)
from tests.unit.ingest.dicom_reencode import REENCODINGS

ORIGINAL = SAMPLES / "patients" / "4555466_same_machine_gain_loss" / "20130416_SP_DICOM.dcm"
TABLES = ("patients", "devices", "device_lscs", "exams", "measurements", "measurement_conflicts", "source_files")
MOMENTS = {"created_at", "updated_at", "received_at", "last_seen_at", "finished_at"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the data directory), or a throwaway PostgreSQL database's URL."""
    if request.param == "sqlite":
        yield None
    else:
        yield request.getfixturevalue("pg_url")


def _context(folder: Path, url: str | None) -> Context:
    settings = Settings(data_dir=folder / "data", inbox=folder / "inbox", database_url=url, broker_url=None)
    ctx = build_context(settings)
    upgrade(ctx.engine)
    return ctx


def _rows(session: Session, data_dir: Path) -> dict[str, list[str]]:
    """What the store wrote, comparable across two databases: no times, the run's folder out of
    the paths, patients by their key (PostgreSQL's upsert may skip sequence values)."""
    patients = Base.metadata.tables["patients"]
    key = {
        pk: f"{i}|{s}" for pk, i, s in session.execute(select(patients.c.id, patients.c.identifier, patients.c.issuer))
    }
    out: dict[str, list[str]] = {}
    for name in TABLES:
        table = Base.metadata.tables[name]
        columns = [c for c in table.c if c.name not in MOMENTS and not (name == "patients" and c.name == "id")]
        rows = []
        for row in session.execute(select(*columns)):
            values = dict(zip([c.name for c in columns], row, strict=True))
            if values.get("patient_id") is not None:
                values["patient_id"] = key[values["patient_id"]]
            rows.append(json.dumps(values, sort_keys=True, default=str).replace(str(data_dir), "DATA"))
        out[name] = sorted(rows)
    return out


def _store_all(folder: Path, url: str | None, files: list[BatchFile]) -> tuple[dict[str, list[str]], list[int]]:
    """The files dropped, registered in one chunk and stored in batches of 64 as a runner does:
    the rows left, and the statements of each ingest batch."""
    ctx = _context(folder, url)
    drop(files, folder / "drops")
    received = intake_many(ctx, [folder / "drops" / f.rel for f in files], copy=False)
    assert all(not isinstance(r, Exception) for r in received), received
    counted = [0]

    def count(*_: Any) -> None:
        counted[0] += 1

    event.listen(ctx.engine, "before_cursor_execute", count)
    statements = []
    while True:
        counted[0] = 0
        results = run_batch(ctx, kind="ingest_file")
        if not results:
            break
        statements.append(counted[0])
    event.remove(ctx.engine, "before_cursor_execute", count)
    with ctx.sessions() as session:
        rows = _rows(session, ctx.settings.data_dir)
    ctx.engine.dispose()
    return rows, statements


def test_a_batch_stored_in_one_go_leaves_the_rows_of_the_careful_way(
    tmp_path: Path, database: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = load_samples()
    if not samples:
        pytest.skip("shared samples not present")
    files = make_batch(samples, len(samples) + 20)
    if ORIGINAL.is_file():  # an instance, then its re-encodings: the next jobs, so the same batch
        original = ORIGINAL.read_bytes()
        copies = {name: encode(original) for name, encode in REENCODINGS.items()}
        files += [BatchFile(f"routed/{name}.dcm", data, "redrop") for name, data in copies.items() if data != original]
    url_b = None
    if database is not None:  # a second PostgreSQL database for the careful run
        from tests.conftest import create_postgres_database, drop_postgres_database

        url_b = create_postgres_database("dxa_pipeline")
        upgrade(url_b)
    try:
        fast, fast_statements = _store_all(tmp_path / "fast", database, files)
        careful_store = services.ingestion._store_batch

        def always_careful(ctx: Context, parsed: Any, batch: Any = None) -> Any:
            return careful_store(ctx, parsed, services.ingestion._Batch(careful=True))

        monkeypatch.setattr(services.ingestion, "_store_batch", always_careful)
        careful, careful_statements = _store_all(tmp_path / "careful", url_b, files)
    finally:
        if url_b is not None:
            drop_postgres_database(url_b)
    statuses = sorted(json.loads(r)["status"] for r in fast["source_files"])
    assert "ingested" in statuses and "quarantined" in statuses  # the batch has both kinds
    assert fast["measurement_conflicts"] or fast["exams"]
    for name in TABLES:
        assert fast[name] == careful[name], name
    # One go: fewer statements than a savepoint and an UPDATE per file alone would save.
    assert sum(fast_statements) < sum(careful_statements) - 2 * len(files)
