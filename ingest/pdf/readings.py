"""What one report's pages have yielded so far, and the vendor's trend rows built from it.

A layout may print the current exam's change in its results table and the same exam again in
its trend table (Norland): the rows are merged per site, side and date so that neither copy is
lost nor counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from ingest.dates import DateOrder
from ingest.pdf.rows import Cell
from ingest.pdf.template import Template
from ingest.report import SiteMeasurement, VendorHistoryRow


@dataclass
class Readings:
    """Shared by the results and trend readers of one report: every page adds to the same sites,
    so a site printed on two pages is caught as one site printed twice."""

    template: Template
    exam_date: date
    measurements: dict[tuple[str, str | None], SiteMeasurement]
    history: list[VendorHistoryRow]
    notes: list[str]
    date_order: DateOrder = "DMY"


def history_row(
    site: str, side: str | None, when: date, bmd: float | None, cells: dict[str, Cell], provenance: str
) -> VendorHistoryRow:
    def value(key: str) -> float | None:
        cell = cells.get(key)
        return cell.value if cell else None

    return VendorHistoryRow(
        site=site,
        side=side,
        date=when,
        bmd=bmd,
        change_vs_baseline_pct=value("chg_base_pct"),
        change_vs_previous_pct=value("chg_prev_pct"),
        change_vs_baseline_g_cm2=value("chg_base_g"),
        change_vs_previous_g_cm2=value("chg_prev_g"),
        significant_marker=any(c.significant for c in cells.values()),
        significant_vs_baseline=_marked(cells, "chg_base_pct", "chg_base_g"),
        significant_vs_previous=_marked(cells, "chg_prev_pct", "chg_prev_g"),
        dissimilar_marker=any(c.dissimilar for c in cells.values()),
        provenance=provenance,
    )


def _marked(cells: dict[str, Cell], *keys: str) -> bool | None:
    """The vendor's "*" on the change against one reference; None when that change is not printed."""
    printed = [cells[k] for k in keys if k in cells and cells[k].value is not None]
    return any(c.significant for c in printed) if printed else None


def merge_history(rows: Sequence[VendorHistoryRow]) -> tuple[VendorHistoryRow, ...]:
    """One row per site, side and date: a layout may print the current exam's change in the
    results table and its BMD again in the trend table (Norland)."""
    merged: dict[tuple[str, str | None, date], VendorHistoryRow] = {}
    for row in rows:
        key = (row.site, row.side, row.date)
        old = merged.get(key)
        if old is None:
            merged[key] = row
            continue
        merged[key] = VendorHistoryRow(
            site=row.site,
            side=row.side,
            date=row.date,
            bmd=old.bmd if old.bmd is not None else row.bmd,
            change_vs_baseline_pct=_first(old.change_vs_baseline_pct, row.change_vs_baseline_pct),
            change_vs_previous_pct=_first(old.change_vs_previous_pct, row.change_vs_previous_pct),
            change_vs_baseline_g_cm2=_first(old.change_vs_baseline_g_cm2, row.change_vs_baseline_g_cm2),
            change_vs_previous_g_cm2=_first(old.change_vs_previous_g_cm2, row.change_vs_previous_g_cm2),
            significant_marker=old.significant_marker or row.significant_marker,
            significant_vs_baseline=_first_bool(old.significant_vs_baseline, row.significant_vs_baseline),
            significant_vs_previous=_first_bool(old.significant_vs_previous, row.significant_vs_previous),
            dissimilar_marker=old.dissimilar_marker or row.dissimilar_marker,
            provenance=f"{old.provenance}; {row.provenance}",
        )
    return tuple(merged.values())


def _first(a: float | None, b: float | None) -> float | None:
    return a if a is not None else b


def _first_bool(a: bool | None, b: bool | None) -> bool | None:
    return a if a is not None else b
