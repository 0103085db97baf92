"""PDFs as hospitals send them, built from the shared samples: several reports in one file,
rotated pages, re-distilled or re-saved by the tools on the way (ghostscript, qpdf, a cairo
printer), a trailing blank page. Shared by the tests and `bench/pdf_variants.py` (the table)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pypdf import PdfReader, PdfWriter, Transformation

from ingest.errors import ParseError
from ingest.parse import ParseLimits, parse_file_reports
from ingest.report import ParsedReport
from tests.unit.ingest.test_shared_samples import SAMPLES, TRUTH_SUFFIX, compare


def truth_of(sample: Path) -> dict[str, Any]:
    return dict(json.loads(Path(str(sample) + TRUTH_SUFFIX).read_text(encoding="utf-8")))


def accepted_pdfs() -> list[Path]:
    """Every shared PDF sample a parser must accept (the variants start from these)."""
    out = []
    for truth in sorted(SAMPLES.rglob("*.pdf" + TRUTH_SUFFIX)):
        sample = truth.with_name(truth.name[: -len(TRUTH_SUFFIX)])
        if sample.is_file() and truth_of(sample)["expect"] == "accept":
            out.append(sample)
    return out


# --------------------------------------------------------------------------- builders


def _write(writer: PdfWriter) -> bytes:
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def concat(*pdfs: bytes) -> bytes:
    writer = PdfWriter()
    for data in pdfs:
        for page in PdfReader(io.BytesIO(data)).pages:
            writer.add_page(page)
    return _write(writer)


def rotate_attribute(data: bytes, degrees: int = 90) -> bytes:
    """/Rotate on every page: the viewer turns the page, the content stream is unchanged."""
    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(data)).pages:
        writer.add_page(page).rotate(degrees)
    return _write(writer)


def rotate_content(data: bytes) -> bytes:
    """Text drawn rotated by 90° on a landscape page (a print driver's 'rotate to fit'), no /Rotate."""
    writer = PdfWriter(clone_from=io.BytesIO(data))
    for page in writer.pages:
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        page.add_transformation(Transformation().rotate(90).translate(tx=height, ty=0))
        page.mediabox.upper_right = (height, width)
    return _write(writer)


def trailing_blank(data: bytes) -> bytes:
    writer = PdfWriter()
    reader = PdfReader(io.BytesIO(data))
    for page in reader.pages:
        writer.add_page(page)
    box = reader.pages[0].mediabox
    writer.add_blank_page(width=float(box.width), height=float(box.height))
    return _write(writer)


def _tool(args: Sequence[str], data: bytes, out_name: str = "out.pdf") -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.pdf", Path(tmp) / out_name
        src.write_bytes(data)
        cmd = [a.replace("{in}", str(src)).replace("{out}", str(dst)) for a in args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        return dst.read_bytes()


def qpdf_linearized(data: bytes) -> bytes:
    return _tool(["qpdf", "--linearize", "{in}", "{out}"], data)


def qpdf_object_streams(data: bytes) -> bytes:
    return _tool(["qpdf", "--object-streams=generate", "--compress-streams=y", "{in}", "{out}"], data)


def gs_pdfwrite(data: bytes) -> bytes:
    args = ["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite", "-sOutputFile={out}", "{in}"]
    return _tool(args, data)


def gs_pdfa(data: bytes) -> bytes:
    return _tool(
        [
            "gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-dPDFA=2", "-dPDFACompatibilityPolicy=1",
            "-sColorConversionStrategy=RGB", "-sDEVICE=pdfwrite", "-sOutputFile={out}", "{in}",
        ],
        data,
    )  # fmt: skip


def cairo_print(data: bytes) -> bytes:
    return _tool(["pdftocairo", "-pdf", "{in}", "{out}"], data)


TOOLS = {"gs": "ghostscript", "qpdf": "qpdf", "pdftocairo": "poppler-utils"}


def missing_tools() -> list[str]:
    return [package for command, package in TOOLS.items() if shutil.which(command) is None]


# One sample in, one variant out; every variant must give the original's values or a quarantine.
SINGLE_VARIANTS: dict[str, Callable[[bytes], bytes]] = {
    "rotate_90": rotate_attribute,
    "rotate_270": lambda d: rotate_attribute(d, 270),
    "rotated_text": rotate_content,
    "trailing_blank_page": trailing_blank,
    "qpdf_linearized": qpdf_linearized,
    "qpdf_object_streams": qpdf_object_streams,
    "gs_pdfwrite": gs_pdfwrite,
    "gs_pdfa": gs_pdfa,
    "cairo_print": cairo_print,
}


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Outcome:
    verdict: str  # "correct", "quarantined", "wrong"
    detail: str


def judge(data: bytes, truths: Sequence[dict[str, Any]]) -> Outcome:
    """Parse `data` as the pipeline does and judge it against the truths of the reports it holds,
    in page order: every report right, or a refusal; anything else (a missing report, a value
    under another patient, a lost site) is wrong."""
    try:
        reports: tuple[ParsedReport, ...] = parse_file_reports(data, "variant.pdf", ParseLimits())
    except ParseError as exc:
        return Outcome("quarantined", f"{exc.code}: {exc.message}")
    if len(reports) != len(truths):
        return Outcome("wrong", f"{len(reports)} reports read, {len(truths)} printed")
    problems = [p for report, truth in zip(reports, truths, strict=True) for p in compare(report, truth)]
    return Outcome("wrong", "; ".join(problems)) if problems else Outcome("correct", "")
