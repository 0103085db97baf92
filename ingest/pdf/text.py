"""The text pass: a PDF's pages as lines, plus its Info dictionary.

pypdfium2 is the default reader: about 1 ms per report, and on every layout we support it writes
one table row per line in reading order. It has one known loss: a CJK glyph that directly follows
a Latin run in a separate text object is dropped ("2016年03月18日" reads "2016 03 18", "T值" reads
"T"); templates are written to match either form. pdfplumber (pdfminer) keeps those glyphs but
costs about 100 ms per report; a template may ask for it (`text_source = "pdfplumber"`) when a
layout cannot be read without it, and the tests parse every sample through both readers to
prove the templates do not depend on one reader's line breaks.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw

from ingest.errors import EncryptedPdf, TooLarge, UnreadableFile

_ENCRYPTED_MESSAGE = (
    "encrypted PDF: password protected, its results cannot be read; export the report again "
    "without a password (or send the DICOM results instead)"
)


# Spaces other than U+0020 that PDF producers and print drivers write between words and cells:
# tab, no-break and narrow no-break spaces, the typographic spaces, the ideographic space. Templates
# match plain spaces and hyphens, so every text source is read through this table.
_SPACES = str.maketrans(
    dict.fromkeys(["\t", "\u00a0", "\u1680", *map(chr, range(0x2000, 0x200B)), "\u202f", "\u205f", "\u3000"], " ")
    # and the dashes and minus signs they write for "-" ("T‐score", "−1.3", "L1–L4"), made ASCII
    | dict.fromkeys(["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212", "\ufe63", "\uff0d"], "-")
)


def text_line(raw: str) -> str:
    """One line as templates read it: other spaces and dashes made plain, ends stripped."""
    return raw.translate(_SPACES).strip()


@dataclass(frozen=True)
class PdfText:
    pages: tuple[tuple[str, ...], ...]  # per page, its lines (stripped, in reading order)
    metadata: dict[str, str] = field(default_factory=dict)  # Info dictionary: Creator, Producer, Title…
    source: str = "pdfium"

    @property
    def page_count(self) -> int:
        return len(self.pages)


def _too_large(pages: int, max_pages: int) -> TooLarge:
    return TooLarge(
        f"PDF has {pages} pages, over the limit of {max_pages}: a DXA report is a few pages; "
        "check that the right file was exported"
    )


def read_pdfium(data: bytes, max_pages: int) -> PdfText:
    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium_raw.FPDF_ERR_PASSWORD:
            raise EncryptedPdf(_ENCRYPTED_MESSAGE) from None
        raise UnreadableFile(
            "PDF cannot be opened (damaged or truncated); copy the report from the scanner again"
        ) from None
    try:
        count = len(doc)
        if count > max_pages:
            raise _too_large(count, max_pages)
        pages: list[tuple[str, ...]] = []
        for index in range(count):
            page = doc[index]
            # Text is read in the page's own coordinates: a /Rotate (a scanner's or a print
            # driver's) only turns the view, and pdfium would otherwise re-flow lines around it.
            if page.get_rotation():
                page.set_rotation(0)
            textpage = page.get_textpage()
            try:
                text = str(textpage.get_text_range())
            finally:
                textpage.close()
                page.close()
            pages.append(tuple(text_line(line) for line in text.splitlines()))
        raw_meta = doc.get_metadata_dict(skip_empty=True)
        metadata = {str(k): str(v) for k, v in raw_meta.items()}
    finally:
        doc.close()
    return PdfText(pages=tuple(pages), metadata=metadata, source="pdfium")


def read_pdfplumber(data: bytes, max_pages: int) -> PdfText:
    """The slow reader, for templates that ask for it and for cross-checking pdfium in tests."""
    import pdfplumber
    from pdfminer.pdfdocument import PDFPasswordIncorrect

    try:
        pdf = pdfplumber.open(io.BytesIO(data))
    except PDFPasswordIncorrect:
        raise EncryptedPdf(_ENCRYPTED_MESSAGE) from None
    except Exception:
        raise UnreadableFile(
            "PDF cannot be opened (damaged or truncated); copy the report from the scanner again"
        ) from None
    with pdf:
        count = len(pdf.pages)
        if count > max_pages:
            raise _too_large(count, max_pages)
        pages = tuple(tuple(text_line(line) for line in (page.extract_text() or "").splitlines()) for page in pdf.pages)
        metadata = {str(k): str(v) for k, v in (pdf.metadata or {}).items() if isinstance(v, str) and v}
    return PdfText(pages=pages, metadata=metadata, source="pdfplumber")
