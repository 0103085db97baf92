"""Connection settings the service relies on, checked on a real connection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.engine import make_engine
from db.models import Exam, Job
from db.patients import upsert_patient
from ingest.report import PatientInfo


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")  # the folder is created
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 5000
    finally:
        engine.dispose()


def test_foreign_keys_are_enforced(session: Session) -> None:
    session.add(Exam(patient_id=12345, device_id=67890, exam_date=datetime(2020, 1, 1).date(), scan_types=[]))
    with pytest.raises(IntegrityError):
        session.flush()


def test_timestamps_come_back_aware_and_in_utc(session: Session) -> None:
    patient = upsert_patient(session, PatientInfo("T1"))
    local = datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=8)))
    job = Job(kind="evaluate_patient", patient_id=patient.id, run_after=local)
    session.add(job)
    session.commit()
    session.expire_all()
    again = session.get(Job, job.id)
    assert again is not None and again.run_after == local
    assert again.run_after.tzinfo is not None and again.run_after.utcoffset() == timedelta(0)
    assert again.created_at.tzinfo == UTC


def test_naive_timestamps_are_refused(session: Session) -> None:
    patient = upsert_patient(session, PatientInfo("T2"))
    session.add(Job(kind="evaluate_patient", patient_id=patient.id, run_after=datetime(2024, 1, 1)))
    with pytest.raises(Exception, match="naive"):
        session.flush()


def test_savepoints_work(engine: Engine, session: Session) -> None:
    """pysqlite's own transaction handling would break SAVEPOINT; ours must not."""
    upsert_patient(session, PatientInfo("S1"))
    nested = session.begin_nested()
    upsert_patient(session, PatientInfo("S2"))
    nested.rollback()
    session.commit()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT identifier FROM patients ORDER BY identifier")).scalars().all() == ["S1"]
