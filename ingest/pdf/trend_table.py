"""The vendor's trend tables: earlier exams as the machine printed them, with its change and
its "*" (significant) and "#" (dissimilar) markers. "long" tables print one site's rows under a
titled heading; "wide" tables print one column per site under a header row of site names."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.dates import parse_date
from ingest.pdf.readings import Readings, history_row
from ingest.pdf.rows import Label, need_side, resolve_suffix, row_values, wide_header
from ingest.pdf.template import CHANGE_KEYS, HistorySpec


def parse_trend_table(
    ctx: Readings, spec: HistorySpec, page_no: int, lines: Sequence[str], page_side: str | None
) -> None:
    template = ctx.template
    for start, line in enumerate(lines):
        match = spec.title.search(line)
        if not match:
            continue
        sites: list[Label] = []
        if spec.shape == "long":
            label = resolve_suffix(match["site"], template)
            if label is None:
                ctx.notes.append(f"trend table at pdf p{page_no} line {start + 1}: site not recognised")
                continue
            sites = [label]
        started = False
        for index in range(start + 1, min(len(lines), start + 60)):
            row = lines[index]
            dated = template.date_pattern.match(row)
            if not dated:
                if started:
                    break
                if spec.shape == "wide" and not sites:
                    sites = wide_header(row, template)
                continue
            when = parse_date(dated["date"], ctx.date_order)
            cells = row_values(row[dated.end() :].split())
            if when is None or cells is None:
                if started:
                    break
                continue
            started = True
            provenance = f"pdf p{page_no} line {index + 1}"
            if spec.shape == "long":
                keyed = dict(zip(spec.columns[1:], cells, strict=False))
                pairs = [(sites[0], keyed)]
            else:
                pairs = [(site, {"bmd": cell}) for site, cell in zip(sites, cells, strict=False)]
            for label, keyed in pairs:
                assert label.site is not None
                side = need_side(label.site, label.side, page_side, template)
                bmd_cell = keyed.get("bmd")
                bmd = bmd_cell.value if bmd_cell else None
                changes = {k: c for k, c in keyed.items() if k in CHANGE_KEYS}
                ctx.history.append(history_row(label.site, side, when, bmd, changes, provenance))
