"""The parser boundary: library exceptions become typed errors, impossible values are refused before
storage with a reason, and library log text never leaves the boundary."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from datetime import date
from typing import Any

import pydicom
import pytest

from ingest.boundary import classify, guard_library_logs, guarded
from ingest.errors import ImplausibleValues, TooComplex, UnreadableFile
from ingest.parse import ParseLimits, parse_file
from tests.unit.ingest import dicom_builders as b

TODAY = date(2026, 6, 1)
LIMITS = ParseLimits(today=TODAY)


def _hologic(change: Callable[[Any], None] | None = None, rows: list[list[str]] | None = None) -> bytes:
    data = b.hologic_file(b.hologic_blob(rows or b.SPINE_ROWS))
    if change is None:
        return data
    ds = pydicom.dcmread(io.BytesIO(data))
    change(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _refused(data: bytes) -> str:
    with pytest.raises(ImplausibleValues) as caught:
        parse_file(data, "x.dcm", LIMITS)
    assert caught.value.code == "implausible_values"
    return caught.value.message


def test_a_plausible_file_passes() -> None:
    assert parse_file(_hologic(), "x.dcm", LIMITS).patient.patient_id == "P123"


@pytest.mark.parametrize("bmd", ["1000000000000000000000000.0", "0.000", "-0.5", "99.9"])
def test_impossible_bmd_is_refused_with_the_site(bmd: str) -> None:
    rows = [list(r) for r in b.SPINE_ROWS]
    rows[0][3] = bmd
    assert "BMD at L1 is" in _refused(_hologic(rows=rows))


def test_impossible_scores_are_refused() -> None:
    rows = [list(r) for r in b.SPINE_ROWS]
    rows[1][4] = "-177"
    assert "T-score at L2" in _refused(_hologic(rows=rows))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda ds: setattr(ds, "StudyDate", "99991231"), "in the future"),
        (lambda ds: setattr(ds, "StudyDate", "18000101"), "before 1987"),
        (lambda ds: setattr(ds, "PatientBirthDate", "20250101"), "birth date is after the exam"),
        (lambda ds: setattr(ds, "PatientID", "\x01"), "patient ID"),
        (lambda ds: setattr(ds, "Manufacturer", "HOLOGIC" + "X" * 70_000), "manufacturer is 70007 characters"),
    ],
)
def test_impossible_header_values_are_refused_without_quoting_them(change: Callable[[Any], None], words: str) -> None:
    message = _refused(_hologic(change))
    assert words in message
    for value in ("9999", "1800", "2025", "P123", "TEST", "PATIENT", "\x01", "XXXX"):
        assert value not in message


def test_the_future_is_measured_against_the_clock_passed_in() -> None:
    data = _hologic(lambda ds: setattr(ds, "StudyDate", "20260610"))
    assert parse_file(data, "x.dcm", ParseLimits(today=date(2026, 6, 10))).exam_date == date(2026, 6, 10)
    with pytest.raises(ImplausibleValues, match="future"):
        parse_file(data, "x.dcm", ParseLimits(today=date(2026, 6, 1)))


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (MemoryError(), "too_large", "memory"),
        (RecursionError(), "too_large", "nested"),
        (NotImplementedError("x"), "unreadable", "NotImplementedError"),
        (AttributeError("'NoneType' has no attribute"), "unreadable", "AttributeError"),
        (KeyError("DOE^JANE"), "unreadable", "KeyError"),
    ],
)
def test_untyped_exceptions_are_classified(exc: BaseException, code: str, words: str) -> None:
    typed = classify(exc, "DICOM")
    assert typed.code == code and words in typed.message
    assert "DOE" not in typed.message  # the library's text is never quoted


def test_library_exception_types_are_named() -> None:
    import pypdfium2
    from pydicom.errors import BytesLengthException

    assert "pdfium reader" in classify(pypdfium2.PdfiumError("x"), "PDF").message
    assert "pydicom reader" in classify(BytesLengthException("DOE^JANE 19500101"), "DICOM").message


def test_guarded_keeps_typed_errors_and_types_the_rest() -> None:
    def boom() -> None:
        raise TypeError("unsupported operand: 'DOE^JANE'")

    with pytest.raises(UnreadableFile) as caught:
        guarded("DICOM", boom)
    assert caught.value.__cause__ is None and "DOE" not in str(caught.value)
    with pytest.raises(TooComplex):
        guarded("PDF", lambda: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(KeyboardInterrupt):
        guarded("PDF", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))


def test_library_log_text_is_withheld(caplog: pytest.LogCaptureFixture) -> None:
    handler = guard_library_logs()
    before = handler.count
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("pydicom").warning("Expected explicit VR, got %r: DOE^JANE 19500101", b"DOE^JANE")
        logging.getLogger("pdfminer.psparser").debug("token: %r", "DOE^JANE")
        logging.getLogger("pdfminer.psparser").warning("bad token: %r", "DOE^JANE")
    assert handler.count == before + 2  # the DEBUG record is not even produced
    assert caplog.records, "the withheld records are still counted and announced"
    assert all("DOE" not in r.getMessage() and "19500101" not in r.getMessage() for r in caplog.records)
    # Someone turning pydicom's own debugging on later cannot reopen it: the guard runs per parse.
    pydicom.config.debug(True)
    try:
        guard_library_logs()
        assert logging.getLogger("pydicom").handlers == [handler]
        assert logging.getLogger("pydicom").propagate is False
    finally:
        pydicom.config.debug(False)
        guard_library_logs()
