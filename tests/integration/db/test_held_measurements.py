"""New measurement rows held back to the end of a batch's transaction (`merge_measurements(defer=
True)`, issue 13) give the rows and conflicts that writing each file's at once gives: a later file
of the same exam confirms a held row and fills its gaps, disagrees with one (the held rows are
written then, so the conflict names a row), and goes on merging after that."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.measurements import flush_measurements
from db.models import Measurement, MeasurementConflict
from db.patients import lock_batch_patients
from db.reports import SharedWrites, prefetch_exams, prepare_shared_rows, store_report
from tests.integration.db.helpers import report, site


@pytest.mark.parametrize("defer", [True, False])
def test_files_of_one_exam_merge_alike_whether_their_new_rows_are_held_or_not(session: Session, defer: bool) -> None:
    first = report(site("L1-L4", 0.900), site("L1", 0.850), site("L2", 0.800))
    # L1-L4 agrees and fills a T-score; L1 disagrees (the held rows are written); L2 agrees after
    # that and fills a Z-score; L3 is new, held again.
    second = report(
        site("L1-L4", 0.900, t_score=-1.5),
        site("L1", 0.950),
        site("L2", 0.800, z_score=-0.3),
        site("L3", 0.870),
        fmt="pdf_hologic",
    )
    third = report(site("L3", 0.870, t_score=-1.0), site("L4", 0.910), fmt="hologic_apex_dicom")
    stored = [store_report(session, r, defer=defer) for r in (first, second, third)]
    flush_measurements(session)
    session.commit()
    assert len({s.exam.id for s in stored}) == 1
    assert len(stored[1].measurements.conflicts) == 1
    rows = sorted((m.site, m.bmd, m.t_score, m.z_score) for m in session.scalars(select(Measurement)))
    assert rows == [
        ("L1", 0.850, None, None),
        ("L1-L4", 0.900, -1.5, None),
        ("L2", 0.800, None, -0.3),
        ("L3", 0.870, -1.0, None),
        ("L4", 0.910, None, None),
    ]
    conflicts = [(c.site, c.accepted_bmd, c.conflicting_bmd) for c in session.scalars(select(MeasurementConflict))]
    assert conflicts == [("L1", 0.850, 0.950)]
    named = session.scalars(select(MeasurementConflict.measurement_id)).one()
    assert session.get(Measurement, named).site == "L1"  # type: ignore[union-attr]


def test_a_batchs_new_exams_wait_for_one_flush_with_the_ids_the_database_would_give(session: Session) -> None:
    """`db.exams.deferred_exams`: the new exams of a batch stored without savepoints are written
    together at the end, not by an INSERT … RETURNING each; a later file of one of them joins it
    meanwhile. The ids: on SQLite those the files one by one would have been given; on PostgreSQL
    the exams' sequence's next ones, reserved in one statement for the batch's days without an exam."""
    from datetime import date

    from sqlalchemy import event, text

    from db.exams import deferred_exams, flush_new_exams
    from db.models import Exam

    postgres = session.get_bind().dialect.name == "postgresql"
    assert deferred_exams(session)
    before = 0
    if postgres:  # the sequence's last value (other tests drew from it): the batch's come next
        before = int(session.scalar(text("SELECT nextval(pg_get_serial_sequence('exams', 'id'))")) or 0)
        session.commit()
    statements: list[str] = []
    event.listen(session.get_bind(), "before_cursor_execute", lambda *a: statements.append(a[2]))
    session.connection()  # the batch's transaction begun (its caches are the transaction's)
    days = [date(2020, 1, d) for d in (10, 11, 12)]
    reports = [report(site("L1-L4", 0.9), patient=f"P{n}", on=d) for n, d in enumerate(days)]
    reports.append(report(site("L1", 0.85), patient="P1", on=days[1]))
    prepare_shared_rows(session, reports)  # as `services.ingestion` stores a batch
    lock_batch_patients(session, [r.patient for r in reports])
    prefetch_exams(session, reports)
    *stored, again = [store_report(session, r, shared=SharedWrites(), defer=True) for r in reports]
    assert not [s for s in statements if s.startswith("INSERT INTO exams")]  # not yet
    flush_new_exams(session)  # as `services.ingestion` ends a batch
    flush_measurements(session)
    session.commit()
    assert len([s for s in statements if s.startswith("INSERT INTO exams")]) == 1
    assert len([s for s in statements if "nextval" in s]) == (1 if postgres else 0)  # three ids at once
    assert again.exam.id == stored[1].exam.id
    one, two, three = before + 1, before + 2, before + 3
    assert [s.exam.id for s in stored] == [one, two, three]
    assert sorted(session.scalars(select(Exam.id))) == [one, two, three]
    assert {(m.exam_id, m.site) for m in session.scalars(select(Measurement))} == {
        (one, "L1-L4"),
        (two, "L1-L4"),
        (three, "L1-L4"),
        (two, "L1"),
    }
