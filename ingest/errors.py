"""Typed parse failures, each worded for the technologist who has to act on the file.

`code` is stable and names the quarantine folder (`quarantine/<code>/`); `message` is the
plain-words reason stored in the sidecar and shown on the QA page. Messages never contain
patient data: name what was wrong with the file, not whose file it was.
"""

from __future__ import annotations


class ParseError(Exception):
    code = "parse_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyFile(ParseError):
    code = "empty_file"


class NotDicom(ParseError):
    """Not a DICOM file nor a PDF: unrecognised format."""

    code = "unrecognised_format"


class UnreadableFile(ParseError):
    """Truncated or corrupt: the bytes cannot be read completely."""

    code = "unreadable"


class EncryptedPdf(ParseError):
    code = "encrypted_pdf"


class NotDxaResult(ParseError):
    """A readable file that carries no bone-density results (an image, a questionnaire, an IVA page)."""

    code = "not_dxa_result"


class UnsupportedLayout(ParseError):
    """Results seem to be there but in a layout we do not know; the message names what was recognised."""

    code = "unsupported_layout"


class MalformedResults(ParseError):
    """A known layout whose results table is damaged (for example no BMD column)."""

    code = "malformed_results"


class MissingField(ParseError):
    """A required field (patient ID, exam date, device model…) is absent; the message names it."""

    code = "missing_field"


class TooLarge(ParseError):
    """Over the configured file-size or page limit."""

    code = "too_large"


class TooComplex(TooLarge):
    """Reading would need more memory or nesting than allowed: a damaged length or a bomb."""

    code = "too_large"


class ImplausibleValues(ParseError):
    """Read completely, but a value cannot be true (a BMD of 1e23, an exam in 1800, a birth after
    the exam, a control character in an ID): refused before storage, the message says which."""

    code = "implausible_values"


class PatientMismatch(ParseError):
    """Parts of one file name different patients (or exams) and cannot be told apart with
    certainty: pages of a PDF, or a DICOM header and the report it carries. Refused whole: a value
    filed under the wrong patient is the worst outcome, worse than a file held for a person."""

    code = "patient_mismatch"


class AmbiguousDate(ParseError):
    """Numeric dates that read differently day-first and month-first ("03/04/2024") in a report
    that does not prove which (no month in words, no day over 12, no scan ID or units of one
    locale). Refused rather than guessed: a swapped date moves an exam in a patient's history."""

    code = "ambiguous_date"
