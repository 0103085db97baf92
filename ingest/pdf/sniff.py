"""Which template reads this PDF, and, when none does, why the file cannot be ingested.

A PDF that no template matches is one of three things, and the technologist acts differently on
each: a DXA report in a layout we do not know yet (UnsupportedLayout: ask for a template, naming
what was recognised), a DXA page that carries no BMD (an IVA page: the densitometry is in another
file), or not a DXA report at all (a questionnaire or form scanned into PACS).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ingest.errors import NotDxaResult, ParseError, UnsupportedLayout
from ingest.pdf.template import Template
from ingest.pdf.text import PdfText

_VENDORS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Hologic", re.compile(r"\bhologic\b|\bhorizon\s+[acw]\b|\bdiscovery\s+[acw]\b", re.I)),
    ("GE Lunar", re.compile(r"\blunar\b|\benCORE\b|\bprodigy\b|\bidxa\b", re.I)),
    ("Norland", re.compile(r"\bnorland\b|\billuminatus\b", re.I)),
    ("OsteoSys", re.compile(r"\bosteosys\b|\bprimus\b|\bdexxum\b", re.I)),
    ("Medilink", re.compile(r"\bmedilink\b|\bmedix\b", re.I)),
    ("DMS / Stratos", re.compile(r"\bstratos\b|\bDMS\b")),
)
_BMD_EVIDENCE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("BMD values in g/cm²", re.compile(r"(?:g|mg)\s*/\s*cm(?:²|2|\^2)")),
    ("a BMD column", re.compile(r"\bBMD\b|骨密度值|骨密度\(|骨密度（")),
    ("T-scores", re.compile(r"\bT[- ]?score\b|T值", re.I)),
)
_RESULT_ROW = re.compile(
    r"^(?:L[1-5](?:\s*[-–]\s*L[1-5])?|Neck|Total|Troch|Femoral Neck|Total Hip|Radius.*|UD|1/3|33%|"
    r"[左右]?侧?(?:股骨颈|全髋|大转子)|腰椎.*)\s+[-+]?[0-2][.,]\d{2,3}\b",
    re.I,
)
_DXA_WORDS = re.compile(
    r"\bDXA\b|\bDEXA\b|densitometr|vertebral (?:fracture )?assessment|\bIVA\b|\bVFA\b|骨密度|双能",
    re.I,
)
# CJK Extension A: next to no report prints these, but a CJK font that lost its ToUnicode map on
# the way (ghostscript, a print driver) reads back as a run of them.
_GARBLED = re.compile(r"[\u3400-\u4dbf]")
_FORM_WORDS = re.compile(r"questionnaire|screening form|\bform\b|\[\s*[xX ]?\s*\]\s*(?:yes|no)|signature", re.I)


def choose_template(text: PdfText, templates: Sequence[Template]) -> Template | None:
    full = "\n".join("\n".join(lines) for lines in text.pages)
    for template in templates:
        if all(marker.search(full) for marker in template.detect_all):
            return template
    return None


def classify_unmatched(text: PdfText) -> ParseError:
    lines = [line for page in text.pages for line in page]
    full = "\n".join(lines)
    if not full.strip():
        return UnsupportedLayout(
            "PDF has no text layer (a scanned image?): no BMD results can be read from it; "
            "send the scanner's own report or its DICOM results"
        )
    if len(_GARBLED.findall(full)) >= 5:
        return UnsupportedLayout(
            "PDF text layer is garbled: its fonts lost their Unicode mapping (re-distilled or printed to PDF "
            "on the way), so the printed values cannot be read with certainty; send the scanner's original "
            "report or its DICOM results"
        )
    vendors = [name for name, pattern in _VENDORS if pattern.search(full)]
    evidence = [what for what, pattern in _BMD_EVIDENCE if pattern.search(full)]
    result_rows = sum(1 for line in lines if _RESULT_ROW.match(line))
    if result_rows:
        evidence.append(f"{result_rows} site result row(s)")
    if result_rows or len(evidence) >= 2:
        recognised = ", ".join(([f"{' / '.join(vendors)} report"] if vendors else []) + evidence)
        return UnsupportedLayout(
            f"PDF report layout not supported: recognised {recognised}, but no known layout matches; "
            "a template for this printout has to be added before it can be ingested"
        )
    if _FORM_WORDS.search(full) and not vendors:
        return NotDxaResult("not a DXA report: questionnaire / form with no BMD results; nothing to ingest")
    if vendors or _DXA_WORDS.search(full):
        seen = ", ".join(vendors + (["a DXA page"] if _DXA_WORDS.search(full) else []))
        kind = " (vertebral fracture assessment)" if re.search(r"vertebral|\bIVA\b|\bVFA\b", full, re.I) else ""
        return NotDxaResult(
            f"DXA page without BMD results{kind}: recognised {seen} but no BMD results to ingest; "
            "the bone density results come in another file"
        )
    return NotDxaResult("not a DXA report: the PDF has no BMD results; nothing to ingest")
