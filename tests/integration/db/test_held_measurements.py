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
from db.reports import store_report
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
