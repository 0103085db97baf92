"""Files of one visit make one exam: merged across files, weak identities, late arrivals."""

from __future__ import annotations

import threading
from datetime import date

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from db.devices import find_or_create_device
from db.engine import session_factory
from db.files import register_source_file
from db.history import save_evaluation
from db.models import ComparisonRow, Device, Exam, Measurement, Patient
from db.patients import upsert_patient
from db.reports import store_report
from ingest.report import PatientInfo
from tests.integration.db.helpers import (
    GE,
    HIP,
    HOLOGIC,
    HOLOGIC_OTHER,
    HOLOGIC_WEAK,
    SPINE,
    comparison,
    evaluation,
    report,
    sha,
)


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_spine_and_hip_files_of_one_visit_make_one_exam(session: Session) -> None:
    spine = store_report(session, report(*SPINE, scan_type="spine"))
    hip = store_report(session, report(*HIP, scan_type="dual_hip"))
    session.commit()
    assert spine.exam.id == hip.exam.id
    assert _count(session, Exam) == 1
    assert sorted((m.site, m.side) for m in hip.exam.measurements) == [
        ("L1", None),
        ("L1-L4", None),
        ("femoral_neck", "left"),
        ("total_hip", "left"),
    ]
    assert hip.exam.scan_types == ["dual_hip", "spine"]
    assert hip.exam.vertebral_set == "L1-L4"


def test_pdf_and_dicom_of_the_same_exam_do_not_double(session: Session) -> None:
    store_report(session, report(*SPINE, fmt="hologic_apex_dicom"))
    again = store_report(session, report(*SPINE, fmt="pdf_hologic"))
    session.commit()
    assert _count(session, Exam) == 1
    assert _count(session, Measurement) == 2
    assert len(again.measurements.confirmed) == 2 and not again.measurements.added


def test_other_date_or_other_machine_is_another_exam(session: Session) -> None:
    first = store_report(session, report(*SPINE))
    later = store_report(session, report(*SPINE, on=date(2022, 1, 11)))
    other_unit = store_report(session, report(*SPINE, device=HOLOGIC_OTHER))
    other_maker = store_report(session, report(*SPINE, device=GE))
    session.commit()
    assert len({first.exam.id, later.exam.id, other_unit.exam.id, other_maker.exam.id}) == 4


def test_identity_is_case_and_space_insensitive(session: Session) -> None:
    a = find_or_create_device(session, HOLOGIC)
    b = find_or_create_device(session, HOLOGIC.__class__("Hologic", " horizon  a ", "302081m"))
    assert a.id == b.id
    assert a.identity_strength == "serial"
    assert a.software_versions == ["13.6.0.5"]


def test_weak_file_joins_the_same_day_exam_with_a_serial(session: Session) -> None:
    serial = store_report(session, report(*SPINE))
    weak = store_report(session, report(*HIP, device=HOLOGIC_WEAK, fmt="pdf_hologic"))
    session.commit()
    assert weak.exam.id == serial.exam.id
    assert weak.device.identity_strength == "weak"
    assert serial.exam.device.serial == "302081M"
    assert _count(session, Exam) == 1


def test_later_serial_file_upgrades_a_weak_exam(session: Session) -> None:
    weak = store_report(session, report(*SPINE, device=HOLOGIC_WEAK))
    session.commit()
    assert weak.exam.device.identity_strength == "weak"
    weak_exam_id = weak.exam.id
    serial = store_report(session, report(*HIP))
    session.commit()
    assert serial.exam.id == weak_exam_id
    session.expire_all()
    exam = session.get(Exam, weak_exam_id)
    assert exam is not None and exam.device.serial == "302081M"
    assert len(exam.measurements) == 4


def test_weak_file_is_not_attributed_when_two_units_scanned_that_day(session: Session) -> None:
    a = store_report(session, report(*SPINE))
    b = store_report(session, report(*SPINE, device=HOLOGIC_OTHER))
    weak = store_report(session, report(*HIP, device=HOLOGIC_WEAK))
    session.commit()
    assert weak.exam.id not in (a.exam.id, b.exam.id)
    assert weak.exam.device.identity_strength == "weak"


def test_two_weak_exams_fold_into_the_serial_exam(session: Session) -> None:
    """A weak exam and a serial exam that got created apart (say, by two workers at once) are
    merged when the next serial file of that visit arrives."""
    weak = store_report(session, report(*SPINE, device=HOLOGIC_WEAK))
    session.commit()
    # a serial exam made beside it, as a concurrent worker could have
    patient = session.get(Patient, weak.patient.id)
    assert patient is not None
    device = find_or_create_device(session, HOLOGIC)
    session.add(Exam(patient_id=patient.id, exam_date=date(2020, 1, 10), device_id=device.id, scan_types=["dual_hip"]))
    session.commit()
    assert _count(session, Exam) == 2
    result = store_report(session, report(*HIP))
    session.commit()
    assert _count(session, Exam) == 1
    assert {m.site for m in result.exam.measurements} == {"L1", "L1-L4", "femoral_neck", "total_hip"}


def test_late_file_after_evaluation_joins_the_exam(session: Session) -> None:
    first = store_report(session, report(*SPINE, on=date(2018, 4, 10)))
    second = store_report(session, report(*SPINE, on=date(2020, 1, 21)))
    save_evaluation(session, first.patient.id, evaluation(comparison(str(first.exam.id), str(second.exam.id))))
    session.commit()
    file = register_source_file(session, sha256=sha("late sr"), original_name="STR00003.dcm").file
    late = store_report(session, report(*HIP, on=date(2020, 1, 21), fmt="ge_enhanced_sr"), source_file=file)
    session.commit()
    assert late.exam.id == second.exam.id
    assert file.exam_id == second.exam.id and file.patient_id == first.patient.id
    assert _count(session, Exam) == 2
    assert _count(session, ComparisonRow) == 1  # stays until the re-evaluation replaces it


def test_patient_demographics_fill_gaps_only(session: Session) -> None:
    p = upsert_patient(session, PatientInfo("P9", name=None, sex="F"))
    upsert_patient(session, PatientInfo("P9", name="Later^Name", sex="M"))
    session.commit()
    assert (p.name, p.sex) == ("Later^Name", "F")
    other_issuer = upsert_patient(session, PatientInfo("P9", issuer="HOSP-B"))
    assert other_issuer.id != p.id


def test_concurrent_files_of_one_exam_make_one_exam(engine: Engine) -> None:
    """Two workers storing the spine and the hip file of one visit at the same moment."""
    make = session_factory(engine)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with make() as s:
                barrier.wait()
                store_report(s, report(*(SPINE if i % 2 else HIP), patient="RACE"))
                s.commit()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with make() as s:
        assert _count(s, Patient) == 1
        assert _count(s, Device) == 1
        assert _count(s, Exam) == 1
        assert _count(s, Measurement) == 4
