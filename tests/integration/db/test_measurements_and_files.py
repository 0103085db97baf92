"""Disagreeing values are flagged, never overwritten; files are known by their bytes and UID."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.files import (
    UID_CONFLICT,
    claim_sop_instance_uid,
    mark_ingested,
    mark_processing,
    mark_quarantined,
    register_source_file,
    reset_for_reprocess,
)
from db.measurements import add_measurements, list_conflicts
from db.models import Measurement, MeasurementConflict, SourceFile
from db.reports import store_report
from tests.integration.db.helpers import SPINE, report, sha, site


def test_disagreeing_value_is_a_conflict_and_not_overwritten(session: Session) -> None:
    dicom = register_source_file(session, sha256=sha("dicom"), original_name="a.dcm").file
    pdf = register_source_file(session, sha256=sha("pdf"), original_name="a.pdf").file
    first = store_report(session, report(site("L1-L4", 0.900)), source_file=dicom)
    second = store_report(session, report(site("L1-L4", 0.912, provenance="page 1 line 9")), source_file=pdf)
    session.commit()
    row = session.scalars(select(Measurement)).one()
    assert row.bmd == 0.900 and row.source_file_id == dicom.id
    [conflict] = second.measurements.conflicts
    assert (conflict.accepted_bmd, conflict.conflicting_bmd) == (0.900, 0.912)
    assert conflict.source_file_id == pdf.id and conflict.exam_id == first.exam.id
    assert conflict.state == "open" and conflict.provenance == "page 1 line 9"
    assert [c.id for c in list_conflicts(session)] == [conflict.id]


def test_reprocessing_the_same_file_records_the_conflict_once(session: Session) -> None:
    pdf = register_source_file(session, sha256=sha("pdf"), original_name="a.pdf").file
    store_report(session, report(site("L1-L4", 0.900)))
    for _ in range(2):
        store_report(session, report(site("L1-L4", 0.950)), source_file=pdf)
    session.commit()
    assert session.scalar(select(func.count()).select_from(MeasurementConflict)) == 1


def test_agreement_within_half_a_printed_digit(session: Session) -> None:
    stored = store_report(session, report(site("L1-L4", 0.9004)))
    merged = add_measurements(
        session, stored.exam, [site("L1-L4", 0.900), site("L1-L4", 0.9009), site("L1-L4", 0.9010)]
    )
    assert len(merged.confirmed) == 2  # 0.0004 and 0.0005 apart: the same value
    assert len(merged.conflicts) == 1  # 0.0006 apart: a different value
    assert stored.exam.measurements[0].bmd == 0.9004


def test_agreeing_file_fills_empty_fields_without_touching_the_bmd(session: Session) -> None:
    sr = register_source_file(session, sha256=sha("sr"), original_name="sr.dcm").file
    stored = store_report(session, report(site("L1-L4", 0.900)))
    store_report(session, report(site("L1-L4", 0.900, t_score=-1.1, z_score=0.2, provenance="SR/TID")), source_file=sr)
    session.commit()
    row = stored.exam.measurements[0]
    assert (row.bmd, row.t_score, row.z_score) == (0.900, -1.1, 0.2)
    assert row.provenance["t_score"] == {"file": sr.id, "at": "SR/TID"}
    assert row.provenance["bmd"]["file"] is None


def test_same_bytes_are_a_duplicate(session: Session) -> None:
    first = register_source_file(session, sha256=sha("bytes"), original_name="../../etc/x\x00.dcm", size_bytes=5)
    session.commit()
    again = register_source_file(session, sha256=sha("bytes").upper(), original_name="copy.dcm")
    session.commit()
    assert first.outcome == "new" and again.outcome == "duplicate"
    assert again.file.id == first.file.id and again.file.times_seen == 2
    assert first.file.original_name == "x.dcm"
    assert session.scalar(select(func.count()).select_from(SourceFile)) == 1


def test_sha256_must_be_a_digest(session: Session) -> None:
    with pytest.raises(ValueError, match="sha256"):
        register_source_file(session, sha256="abc", original_name="x")


def test_same_uid_with_other_bytes_is_quarantined(session: Session) -> None:
    owner = register_source_file(session, sha256=sha("one"), original_name="a.dcm").file
    other = register_source_file(session, sha256=sha("two"), original_name="b.dcm").file
    assert claim_sop_instance_uid(session, owner, "1.2.840.1") is None
    assert claim_sop_instance_uid(session, owner, "1.2.840.1") is None  # own UID again: fine
    holder = claim_sop_instance_uid(session, other, "1.2.840.1")
    session.commit()
    assert holder is not None and holder.id == owner.id
    assert other.status == "quarantined" and other.reason_code == UID_CONFLICT
    assert other.conflict_with_id == owner.id and other.sop_instance_uid is None
    assert owner.sop_instance_uid == "1.2.840.1"


def test_file_status_life_cycle(session: Session) -> None:
    f = register_source_file(session, sha256=sha("life"), original_name="a.pdf").file
    mark_processing(session, f, parser_version="1.0")
    mark_quarantined(session, f, reason_code="encrypted_pdf", reason_text="The PDF is password-protected.")
    session.commit()
    assert (f.status, f.attempts, f.reason_code, f.parser_version) == (
        "quarantined",
        1,
        "encrypted_pdf",
        "1.0",
    )
    assert f.finished_at is not None and f.finished_at.tzinfo is not None
    reset_for_reprocess(session, f)
    mark_processing(session, f)
    mark_ingested(session, f, stored_path="archive/2020/01/ab.pdf")
    session.commit()
    session.expire_all()
    again = session.get(SourceFile, f.id)
    assert again is not None
    assert (again.status, again.reason_code, again.attempts, again.stored_path) == (
        "ingested",
        None,
        1,
        "archive/2020/01/ab.pdf",
    )


def test_store_report_links_the_file(session: Session) -> None:
    f = register_source_file(session, sha256=sha("link"), original_name="a.dcm").file
    stored = store_report(session, report(*SPINE, uid="1.2.3"), source_file=f)
    session.commit()
    assert (f.patient_id, f.exam_id, f.format) == (stored.patient.id, stored.exam.id, "hologic_apex_dicom")
    assert all(m.source_file_id == f.id for m in stored.exam.measurements)
