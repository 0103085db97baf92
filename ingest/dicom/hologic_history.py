"""What a Hologic printout says beyond the current results: its history table (earlier exams,
the machine's change and its "*"/"#" markers), the LSC it printed, and the locale of its dates."""

from __future__ import annotations

import re
from datetime import date

from ingest.dates import parse_date
from ingest.dicom.dates import Order, resolve_order, separator_default
from ingest.dicom.hologic_blob import Blob
from ingest.dicom.hologic_tables import ScanContext, Table, strip_html
from ingest.dicom.sites import site_in, split_side
from ingest.report import VendorHistoryRow
from ingest.vocabulary import bmd_to_g_cm2, canonical_site, parse_cell, parse_decimal

_NUM = r"[-+−]?\d+(?:[.,]\d+)?"
_CHANGE = re.compile(rf"^\s*(?P<a>{_NUM})\s*(?P<pct1>%)?\s*(?:\(\s*(?P<b>{_NUM})\s*%\s*\))?")


def _change(cell: str | None, header_unit_abs: bool) -> tuple[float | None, float | None, bool, bool]:
    """'-1.3%*' → (None, -1.3); '-0.012 (-1.3%)#' → (-0.012, -1.3); returns (abs, pct, *, #)."""
    if not cell or not cell.strip():
        return None, None, False, False
    star, hash_ = "*" in cell, "#" in cell
    m = _CHANGE.match(cell.replace("−", "-"))
    if not m:
        return None, None, star, hash_
    a = parse_decimal(m.group("a"))
    if m.group("b") is not None:
        return a, parse_decimal(m.group("b")), star, hash_
    if m.group("pct1") or not header_unit_abs:
        return None, a, star, hash_
    return a, None, star, hash_


def history_rows(t: Table, ctx: ScanContext, default_site: str | None, order: Order) -> list[VendorHistoryRow]:
    if "date" not in t.columns:
        return []
    title_site = None
    m = re.search(r"history\s*:?\s*(.+)$", t.title, re.I)
    if m and m.group(1).strip(" :"):
        title_site = site_in(m.group(1).strip(" :"), ctx.region) or canonical_site(m.group(1).strip(" :"))
    base_abs = "g/cm" in (t.cells.get((0, t.columns.get("chg_base", -1)), "") or "")
    prev_abs = "g/cm" in (t.cells.get((0, t.columns.get("chg_prev", -1)), "") or "")
    out: list[VendorHistoryRow] = []
    unit = t.units.get("bmd")
    for r in t.rows:
        d = parse_date(t.cell(r, "date") or "", order)
        if d is None:
            continue
        site = title_site or default_site
        side = ctx.side
        label = t.cell(r, "region")
        if label and label.strip():
            base, row_side, had = split_side(strip_html(label))
            site = site_in(base, ctx.region)
            if had:
                side = row_side
        if site is None:
            continue
        bmd = parse_cell(t.cell(r, "bmd"), "BMD")
        ba, bp, s1, h1 = _change(t.cell(r, "chg_base"), base_abs)
        pa, pp, s2, h2 = _change(t.cell(r, "chg_prev"), prev_abs)
        out.append(
            VendorHistoryRow(
                site=site,
                side=side,
                date=d,
                bmd=bmd_to_g_cm2(bmd, unit) if bmd is not None else None,
                change_vs_baseline_pct=bp,
                change_vs_previous_pct=pp,
                change_vs_baseline_g_cm2=ba,
                change_vs_previous_g_cm2=pa,
                significant_marker=s1 or s2,
                significant_vs_baseline=s1 if bp is not None or ba is not None else None,
                significant_vs_previous=s2 if pp is not None or pa is not None else None,
                dissimilar_marker=h1 or h2,
                provenance=f"ResultsTable{t.number}[{r}]",
            )
        )
    return out


_LSC = re.compile(
    r"LSC\s+(?:for\s+(?P<site>[^=,<]+?)\s*)?(?:is|=|:)\s*(?P<val>\d+(?:[.,]\d+)?)\s*(?P<unit>m?g\s*/\s*cm(?:²|2)?)?",
    re.I,
)


def printed_lsc(blob: Blob, ctx: ScanContext, default_site: str | None) -> tuple[tuple[str, float], ...]:
    out: list[tuple[str, float]] = []
    for name in ("FractureRiskStr", "TableNote1", "TableNote2", "TableNote3"):
        text = blob.get(name)
        if not text or "LSC" not in text:
            continue
        for m in _LSC.finditer(text):
            site = default_site
            if m.group("site"):
                label = m.group("site").strip()
                site = site_in(label, ctx.region) or canonical_site(label)
            val = parse_decimal(m.group("val"))
            if site and val is not None:
                out.append((site, bmd_to_g_cm2(val, (m.group("unit") or "g/cm2").replace(" ", ""))))
    return tuple(dict.fromkeys(out))


def locale_order(blob: Blob, raws: list[str], exam: date) -> Order:
    """'March 20, 2021 - A0320210D' is a US layout (month first); '22 December 2021 - …' is
    day-first. That is the locale of the whole printout, numeric dates included."""
    scan = blob.get("Scan") or ""
    if re.match(r"^\s*[A-Za-z]{3,}\.?\s+\d{1,2},?\s+\d{4}", scan):
        default: Order = "MDY"
    elif re.match(r"^\s*\d{1,2}[\s.-]+[A-Za-z]{3,}", scan):
        default = "DMY"
    else:
        default = separator_default(raws)
    return resolve_order(raws, exam, default)
