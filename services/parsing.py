"""Parsing a claimed file in a killable child process, within the per-file limits.

The parsers (`ingest.parse.parse_file`) are pure; what a hostile or broken file can still do (loop,
exhaust memory, crash the interpreter) is contained here: the child is killed at its limits and the
worker survives to quarantine the file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from ingest.errors import TooComplex
from ingest.ocr.read import ScanReading
from ingest.parse import ParseLimits, parse_file_or_scan
from ingest.report import ParsedReport
from services.child import ChildFailed, ChildLimits, ReusableChild, run_in_child
from settings import Settings

log = logging.getLogger(__name__)


def parse_limits(settings: Settings, today: date) -> tuple[ParseLimits, ChildLimits]:
    return (
        ParseLimits(max_bytes=settings.max_file_bytes, max_pdf_pages=settings.max_pdf_pages, today=today),
        ChildLimits(timeout_s=settings.parse_timeout_s, memory_mb=settings.parse_memory_mb),
    )


_parsers_warm = False


def warm_parsers() -> None:
    """Load, once per worker process, what the parsers otherwise load lazily (pdfplumber, pdfminer,
    the PDF templates), then freeze the heap from the garbage collector. Every forked parse child
    then starts with them already in (shared, copy-on-write) memory instead of importing them
    again for each file, and the collector does not touch, hence copy, the inherited pages:
    about 45 ms less per file (bench/pipeline.py)."""
    global _parsers_warm
    if _parsers_warm:
        return
    import gc

    import pdfminer.pdfdocument  # noqa: F401
    import pdfplumber  # noqa: F401

    from ingest.pdf import parse_pdf  # noqa: F401
    from ingest.pdf.template import builtin_templates

    builtin_templates()
    gc.freeze()
    _parsers_warm = True


def _parse_path(path: str, name: str, limits: ParseLimits) -> tuple[ParsedReport, ...] | ScanReading:
    """Runs in the child: the bytes are read there too, so a huge file never bloats the worker.
    A scan comes back as what OCR read (`services.scans` holds it for a person)."""
    return parse_file_or_scan(Path(path).read_bytes(), name, limits)


_children = threading.local()  # a parse child per runner thread (per Celery pool process)


def _child() -> ReusableChild:
    child = getattr(_children, "child", None)
    if child is None:
        child = _children.child = ReusableChild()
    return child


def parse_in_child(
    path: str, name: str, parse_limits: ParseLimits, child_limits: ChildLimits
) -> tuple[ParsedReport, ...] | ScanReading:
    """Parse in this thread's reusable child. When a child that had parsed other files before fails
    (crash, time-out, memory), the file is parsed again in a fresh child and that verdict counts:
    what a child did before must never get a file quarantined."""
    child = _child()
    reused = child.calls > 0 and child.pid is not None
    try:
        reports: tuple[ParsedReport, ...] | ScanReading = child.run(
            _parse_path, (path, name, parse_limits), child_limits
        )
    except ChildFailed as exc:
        if not exc.reused:
            raise
        log.info("a reused parse child failed (%s); parsing the file again in a fresh one", exc.code)
        reports = run_in_child(_parse_path, (path, name, parse_limits), child_limits)
    except TooComplex:
        if not reused:
            raise
        # Out of memory in a child that had parsed others may be their heap, not this file's need.
        log.info("a reused parse child ran out of memory; parsing the file again in a fresh one")
        reports = run_in_child(_parse_path, (path, name, parse_limits), child_limits)
    return reports


Parse = tuple[ParsedReport, ...] | ScanReading | Exception  # a file's reports, or why there are none


def parse_many_in_child(
    files: Sequence[tuple[str, str]], parse_limits: ParseLimits, child_limits: ChildLimits
) -> list[Parse]:
    """`parse_in_child` for several (path, name) files, their requests written ahead to this
    thread's child (`ReusableChild.run_many`): it parses one after the other without waiting for
    this process between them. Each file gets its reports or the exception its parse raised; a
    reused child's failure is judged again in a fresh child, as `parse_in_child` does."""
    calls = [(path, name, parse_limits) for path, name in files]
    out: list[Parse] = []
    for call, outcome in zip(calls, _child().run_many(_parse_path, calls, child_limits), strict=True):
        error = outcome.error
        if error is None:
            out.append(outcome.value)
            continue
        if not outcome.reused or not isinstance(error, ChildFailed | TooComplex):
            out.append(error)
            continue
        log.info("a reused parse child failed (%s); parsing the file again in a fresh one", type(error).__name__)
        try:
            out.append(run_in_child(_parse_path, call, child_limits))
        except Exception as again:
            out.append(again)
    return out
