"""The parser boundary: whatever the reading libraries do with hostile bytes ends here as a typed
`ParseError`, and nothing they say reaches a log with the file's content in it.

Why a boundary and not try/except in every parser: pypdfium2, pdfminer and pydicom raise a long
tail of exception types on damaged input (PdfiumError from a damaged page, BytesLengthException,
NotImplementedError for an odd VR, AttributeError/TypeError/KeyError/IndexError deep in their
code, RecursionError for nesting, MemoryError for bombs). A parser catches what it expects and
words it; anything else is caught once here, mapped to a reason a technologist can act on, and is
deterministic for those bytes, so the file is quarantined at once instead of being retried as if
its worker had crashed.

The messages never quote the library's text (pydicom's quotes raw element bytes: names, IDs,
birth dates); they name the exception type only. The same holds for the libraries' loggers:
`guard_library_logs` stops their records from propagating and re-emits each as a fixed sentence.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable
from typing import TypeVar

from ingest.errors import ParseError, TooComplex, UnreadableFile

log = logging.getLogger("dxa.ingest.boundary")

T = TypeVar("T")

# Loggers of the reading libraries: their text may quote raw file bytes (pydicom logs the raw
# header bytes around a bad length; pdfminer logs tokens and object contents at DEBUG).
LIBRARY_LOGGERS = ("pydicom", "pdfminer", "pdfplumber", "pypdfium2", "PIL", "fontTools", "charset_normalizer")
_GUARD_LOCK = threading.Lock()


class _Withheld(logging.Handler):
    """Re-emit a library record as a fixed sentence on `dxa.ingest.library`: level and source kept,
    text withheld. The counter lets tests and the soak see how many were redacted."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.count = 0
        self._out = logging.getLogger("dxa.ingest.library")

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        # At DEBUG: a damaged file's outcome is logged once, by `guarded`; these only say that
        # the library spoke (pydicom warns about many harmless oddities of real files).
        self._out.debug(
            "%s %s withheld: library messages may quote the file's bytes", record.name, record.levelname.lower()
        )


_WITHHELD = _Withheld()


def guard_library_logs() -> _Withheld:
    """Idempotent: the libraries' loggers keep only our redacting handler, do not propagate, and
    drop DEBUG (pdfminer's debug output is both content-quoting and costly)."""
    with _GUARD_LOCK:
        for name in LIBRARY_LOGGERS:
            lib = logging.getLogger(name)
            if lib.handlers != [_WITHHELD]:
                for handler in list(lib.handlers):
                    lib.removeHandler(handler)
                lib.addHandler(_WITHHELD)
            lib.propagate = False
            if lib.level in (logging.NOTSET, logging.DEBUG) or lib.level < logging.INFO:
                lib.setLevel(logging.INFO)
    return _WITHHELD


def _where(exc: BaseException) -> str:
    """The innermost frame as `module.py:line`: tells a developer which reader gave up, and holds
    no patient data (file paths inside site-packages are cut to their last component)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno}"


def _library_error_types() -> dict[str, tuple[type[BaseException], ...]]:
    types: dict[str, tuple[type[BaseException], ...]] = {}
    try:
        import pypdfium2

        types["pdfium"] = (pypdfium2.PdfiumError,)
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        from pdfminer.pdfexceptions import PDFException
        from pdfminer.psexceptions import PSException

        types["pdfminer"] = (PDFException, PSException)
    except ImportError:  # pragma: no cover
        pass
    try:
        from pydicom.errors import BytesLengthException, InvalidDicomError

        types["pydicom"] = (BytesLengthException, InvalidDicomError)
    except ImportError:  # pragma: no cover
        pass
    return types


def classify(exc: BaseException, kind: str) -> ParseError:
    """The typed error for an exception a reader let escape. `kind` is "PDF" or "DICOM": the
    format as sniffed, for the sentence."""
    name = type(exc).__name__
    if isinstance(exc, ParseError):
        return exc
    if isinstance(exc, MemoryError):
        return TooComplex(
            f"{kind} file needs more memory to read than allowed (a damaged length or a compression "
            "bomb); check the file on the scanner and send it again"
        )
    if isinstance(exc, RecursionError):
        return TooComplex(
            f"{kind} file is nested too deeply to read (damaged or hostile structure); "
            "send the file again from the scanner"
        )
    library = next((lib for lib, types in _library_error_types().items() if isinstance(exc, types)), None)
    action = "copy the report from the scanner again" if kind == "PDF" else "send the file again from the scanner"
    if library is not None:
        return UnreadableFile(f"{kind} file is damaged: the {library} reader could not read it ({name}); {action}")
    return UnreadableFile(
        f"{kind} file is damaged or of an unexpected structure: reading it failed ({name}); {action}; "
        "if a good copy fails the same way, report it (the parser may need a fix)"
    )


def guarded(kind: str, parse: Callable[[], T]) -> T:
    """Run `parse`; any exception but a ParseError becomes one (see `classify`). Keyboard
    interrupts and exits pass through: they are the process's, not the file's."""
    guard_library_logs()
    try:
        return parse()
    except ParseError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        typed = classify(exc, kind)
        log.warning("%s reader raised %s at %s: refused as %s", kind, type(exc).__name__, _where(exc), typed.code)
        raise typed from None
