"""One PDF, several reports: where each report starts, and whether the split can be trusted.

Hospitals concatenate printouts (a Hologic page then a GE page, two visits of one patient, a
day's reports of one machine) and send them as one file. Reading such a file as one report puts
the first page's patient on the last page's values, the worst failure this service can have. So
a PDF is cut into reports before any template is applied:

- a page *starts* a report when a layout recognises it on its own and it prints that layout's
  patient ID, exam date and results table heading;
- any other page (a trend page, a second results page, a blank page, a cover page before the
  first report) *continues* the report before it (a cover page, the first report);
- every page is then checked against the report it belongs to: a patient ID or an exam date,
  in any layout's spelling, that differs from its report's means the split is not certain, and
  the whole file is refused rather than guessed.

When no single page starts a report (markers spread over pages), the whole file is one report,
under the same page check. Splitting uses no clock or I/O: text in, page ranges out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from ingest.dates import DateOrder, parse_date
from ingest.errors import PatientMismatch
from ingest.pdf.sniff import choose_template
from ingest.pdf.template import Template
from ingest.pdf.text import PdfText


@dataclass(frozen=True)
class Segment:
    """One report's pages: `first` and `stop` are 0-based file page indexes (stop exclusive)."""

    template: Template
    first: int
    stop: int

    def text(self, text: PdfText) -> PdfText:
        return PdfText(pages=text.pages[self.first : self.stop], metadata=text.metadata, source=text.source)


def _page_field(template: Template, page: str, name: str) -> str | None:
    pattern = template.fields.get(name)
    match = pattern.search(page) if pattern else None
    return (match["v"].strip() or None) if match else None


def _starts_report(template: Template, page: str) -> bool:
    return (
        _page_field(template, page, "patient_id") is not None
        and _page_field(template, page, "exam_date") is not None
        and template.table.start.search(page) is not None
    )


def find_segments(text: PdfText, templates: Sequence[Template]) -> list[Segment] | None:
    """The reports of a PDF as page ranges, or None when no layout recognises the file."""
    pages = ["\n".join(lines) for lines in text.pages]
    starts: list[tuple[int, Template]] = []
    for index, page in enumerate(pages):
        template = choose_template(PdfText(pages=(text.pages[index],)), templates)
        if template is not None and _starts_report(template, page):
            starts.append((index, template))
    if not starts:
        whole = choose_template(text, templates)
        return None if whole is None else [Segment(whole, 0, len(pages))]
    segments = []
    for k, (index, template) in enumerate(starts):
        first = 0 if k == 0 else index  # pages before the first report belong to it
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(pages)
        segments.append(Segment(template, first, stop))
    return segments


def _ids_on(page: str, templates: Sequence[Template]) -> set[str]:
    found: set[str] = set()
    for template in templates:
        pattern = template.fields.get("patient_id")
        if pattern is None:
            continue
        found.update(m["v"].strip() for m in pattern.finditer(page) if m["v"].strip())
    return found


def _dates_on(page: str, template: Template, order: DateOrder) -> set[date]:
    pattern = template.fields.get("exam_date")
    found = (parse_date(m["v"], order) for m in pattern.finditer(page)) if pattern else ()
    return {when for when in found if when is not None}


def check_pages(
    text: PdfText, segment: Segment, patient_id: str, templates: Sequence[Template], order: DateOrder
) -> None:
    """Refuse the file when a page of this report names another patient, or another exam date
    (read in `order`, the day/month order proved for this report)."""
    dates: set[date] = set()
    for index in range(segment.first, segment.stop):
        page = "\n".join(text.pages[index])
        others = _ids_on(page, templates) - {patient_id}
        if others:
            raise PatientMismatch(
                f"pages of this PDF name different patients (page {index + 1} does not belong to the "
                f"report that starts on page {segment.first + 1}) and the file cannot be split into "
                "complete reports with certainty; send each patient's report as its own file"
            )
        dates |= _dates_on(page, segment.template, order)
    if len(dates) > 1:
        raise PatientMismatch(
            f"the report on pages {segment.first + 1}-{segment.stop} prints {len(dates)} different exam dates "
            "and cannot be split into complete reports with certainty; send each exam's report as its own file"
        )
