"""Exam assembly: which exam a file of one visit belongs to, and whether two files of one exam
agree on a value. Pure rules; `db.exams` applies them to the rows under the patient's lock.

A visit often arrives as several files (a DICOM SR and a PDF printout, a spine and a hip report),
some without the machine's serial. They must make one exam, never two, and never join an exam of
another machine: a file without a serial ("weak" identity) joins the same-day exam of its model
only when exactly one unit of that model has one that day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Strength = Literal["serial", "weak"]

# Two files of one exam "agree" on a BMD when they differ by no more than half the last printed
# digit (vendors print g/cm² to 3 decimals); beyond that the second value is a conflict for QA.
BMD_AGREEMENT_G_CM2 = 0.0005
_FLOAT_SLACK = 1e-9


def bmd_agree(a: float, b: float) -> bool:
    return abs(a - b) <= BMD_AGREEMENT_G_CM2 + _FLOAT_SLACK


@dataclass(frozen=True)
class FileMachine:
    """The machine a file names: its device row, the model it is (`db.converters.model_key`), and
    whether a serial identifies it."""

    device_id: int
    model_key: str
    strength: Strength


@dataclass(frozen=True)
class DayExam:
    """An exam of the same patient on the same date, with its machine."""

    exam_id: int
    device_id: int
    model_key: str
    strength: Strength


@dataclass(frozen=True)
class Assembly:
    """Where the file goes. `exam_id` None: a new exam. `adopt`: the exam (a weak one) takes this
    file's serial-identified device. `absorb`: weak exams of the same model folded into it."""

    exam_id: int | None
    adopt: bool = False
    absorb: tuple[int, ...] = ()


def _of_model(exams: Sequence[DayExam], model_key: str, strength: Strength) -> list[DayExam]:
    return [e for e in exams if e.model_key == model_key and e.strength == strength]


def assemble(file: FileMachine, same_day: Sequence[DayExam]) -> Assembly:
    """The one exam of a patient on a date on a machine; `same_day` oldest first.

    A file without a serial joins the same-day exam of the same model that has a serial, when
    there is exactly one such; otherwise its own weak exam (made on first sight). A file with a
    serial takes its machine's exam; lacking one, it adopts a same-day weak exam of its model and
    absorbs any further ones, unless another unit of that model also has an exam that day, when a
    weak exam cannot be attributed and is left alone.
    """
    exact = next((e for e in same_day if e.device_id == file.device_id), None)
    if file.strength == "weak":
        serial_exams = _of_model(same_day, file.model_key, "serial")
        if len(serial_exams) == 1:
            return Assembly(serial_exams[0].exam_id)
        return Assembly(exact.exam_id if exact is not None else None)
    others = [e for e in _of_model(same_day, file.model_key, "serial") if e.device_id != file.device_id]
    weak = [] if others else _of_model(same_day, file.model_key, "weak")
    if exact is not None:
        return Assembly(exact.exam_id, absorb=tuple(e.exam_id for e in weak))
    if weak:
        return Assembly(weak[0].exam_id, adopt=True, absorb=tuple(e.exam_id for e in weak[1:]))
    return Assembly(None)
