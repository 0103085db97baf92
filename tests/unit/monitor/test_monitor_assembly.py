"""Exam assembly and agreement between files of one exam, as pure rules."""

from __future__ import annotations

from monitor.assembly import Assembly, DayExam, FileMachine, assemble, bmd_agree

HORIZON = "hologic|horizon w"
PRODIGY = "ge|lunar prodigy"


def test_bmd_agreement_is_half_the_last_printed_digit() -> None:
    assert bmd_agree(0.812, 0.812)
    assert bmd_agree(0.812, 0.8125)  # rounding of the same value
    assert not bmd_agree(0.812, 0.813)
    assert bmd_agree(1.0, 1.0 - 0.0005)


def test_first_file_of_a_visit_makes_a_new_exam() -> None:
    assert assemble(FileMachine(1, HORIZON, "serial"), []) == Assembly(None)
    assert assemble(FileMachine(2, HORIZON, "weak"), []) == Assembly(None)


def test_a_second_file_on_the_same_machine_joins_its_exam() -> None:
    day = [DayExam(10, 1, HORIZON, "serial")]
    assert assemble(FileMachine(1, HORIZON, "serial"), day) == Assembly(10)


def test_a_file_without_serial_joins_the_one_serial_exam_of_its_model() -> None:
    day = [DayExam(10, 1, HORIZON, "serial")]
    assert assemble(FileMachine(5, HORIZON, "weak"), day) == Assembly(10)


def test_a_file_without_serial_never_joins_another_model() -> None:
    day = [DayExam(10, 1, HORIZON, "serial")]
    assert assemble(FileMachine(6, PRODIGY, "weak"), day) == Assembly(None)


def test_a_file_without_serial_is_not_attributed_when_two_units_of_its_model_scanned_that_day() -> None:
    day = [DayExam(10, 1, HORIZON, "serial"), DayExam(11, 2, HORIZON, "serial")]
    assert assemble(FileMachine(5, HORIZON, "weak"), day) == Assembly(None)
    day.append(DayExam(12, 5, HORIZON, "weak"))
    assert assemble(FileMachine(5, HORIZON, "weak"), day) == Assembly(12)  # its own weak exam


def test_a_serial_file_adopts_the_weak_exam_of_its_model_and_absorbs_the_rest() -> None:
    day = [DayExam(20, 5, HORIZON, "weak"), DayExam(21, 7, HORIZON, "weak"), DayExam(22, 8, PRODIGY, "weak")]
    assert assemble(FileMachine(1, HORIZON, "serial"), day) == Assembly(20, adopt=True, absorb=(21,))


def test_a_serial_file_with_its_exam_absorbs_weak_exams_of_its_model() -> None:
    day = [DayExam(10, 1, HORIZON, "serial"), DayExam(20, 5, HORIZON, "weak")]
    assert assemble(FileMachine(1, HORIZON, "serial"), day) == Assembly(10, absorb=(20,))


def test_weak_exams_stay_alone_when_another_unit_of_the_model_scanned_that_day() -> None:
    day = [DayExam(11, 2, HORIZON, "serial"), DayExam(20, 5, HORIZON, "weak")]
    assert assemble(FileMachine(1, HORIZON, "serial"), day) == Assembly(None)
