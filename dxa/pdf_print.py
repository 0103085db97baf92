"""Lines printed as a PDF with reportlab's CID font (no font file needed; it covers Latin and
Chinese): the demo's PRIMUS reports and the spelling tests' reprinted samples share it."""

from __future__ import annotations

import io
from collections.abc import Sequence

FONT = "STSong-Light"


def print_pdf(pages: Sequence[Sequence[str]], *, size: float, left: float, top: float, leading: float) -> bytes:
    """One A4 page per list of lines, the first line's baseline at `top`, each next `leading` lower."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    if FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(FONT))
    buf = io.BytesIO()
    pdf = canvas.Canvas(buf, pagesize=(595, 842))
    for lines in pages:
        pdf.setFont(FONT, size)
        for j, line in enumerate(lines):
            pdf.drawString(left, top - leading * j, line)
        pdf.showPage()
    pdf.save()
    return buf.getvalue()
