"""The results table of one page: its columns from the printed header, then one row per site.

Values map to columns by the template's declared order, with the optional columns of the layout
kept or dropped by what the page's header says. A printed row that cannot be read, a site
printed twice with different values, or values with no label refuse the file: storing fewer
sites than the report prints is an error, never a smaller exam.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ingest.errors import MalformedResults
from ingest.pdf.readings import Readings, history_row
from ingest.pdf.rows import NUMBER, need_side, refuse_hidden_row, row_values, split_row
from ingest.pdf.template import CHANGE_KEYS, Column, Template
from ingest.report import SiteMeasurement
from ingest.vocabulary import bmd_to_g_cm2, looks_like_site

_BMD_UNIT = re.compile(r"\bBMD\s*[(\[]?\s*(?P<u>m?g)\s*/\s*cm", re.IGNORECASE)


def _columns_for(template: Template, header_text: str) -> tuple[Column, ...]:
    present: list[Column] = []
    for column in template.table.columns:
        found = column.header is None or bool(column.header.search(header_text))
        if column.optional:
            if found:
                present.append(column)
        elif not found:
            raise MalformedResults(
                f"{template.description}: the results table has no '{column.key}' column; "
                "the report layout may have changed"
            )
        else:
            present.append(column)
    return tuple(present)


def _check_range(value: float | None, low: float, high: float, what: str, template: Template, where: str = "") -> None:
    if value is not None and not low <= value <= high:
        raise MalformedResults(
            f"{template.description}: a {what} of {value}{where} is outside {low}..{high}; "
            "the results columns are not where the layout says"
        )


def parse_results_table(ctx: Readings, page_no: int, lines: Sequence[str], page_side: str | None) -> bool:
    """Read the results table of one page; False when the page has none."""
    template = ctx.template
    spec = template.table
    start = next((i for i, line in enumerate(lines) if spec.start.search(line)), None)
    if start is None:
        return False
    header: list[str] = []
    columns: tuple[Column, ...] | None = None
    group: str | None = None
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if any(end.search(line) for end in spec.end):
            break
        tokens = line.split()
        if not tokens:
            continue
        label, value_tokens = split_row(tokens, template)
        cells = row_values(value_tokens) if label else None
        if label is None and NUMBER.match(tokens[0]) and len(tokens) >= 2 and row_values(tokens):
            # Values with no label in front: the row's label went elsewhere (a rotated page read in
            # another order, a wrapped line). Reading on would drop or misplace a printed site.
            raise MalformedResults(
                f"{template.description}: a results row at pdf p{page_no} line {index + 1} has values but no "
                "site label (a rotated or re-flowed page?); its site cannot be told with certainty"
            )
        first = next((i for i, token in enumerate(tokens) if NUMBER.match(token)), None)
        if label is None and first and row_values(tokens[first:]) and looks_like_site(" ".join(tokens[:first])):
            # A row whose label names a site word no synonym places ("Trochanteric Area 0.701 …"):
            # skipping it could store fewer sites than the report prints.
            raise MalformedResults(
                f"{template.description}: the results row at pdf p{page_no} line {index + 1} has a label that "
                "names a site in a way this layout is not known to print; fewer sites would be stored than the "
                "report prints"
            )
        if label is not None and label.site and cells is None and columns is not None:
            # A printed row of a site whose values cannot be read ("L2 0.703 n.a. -2.9"): skipping
            # it would store fewer sites than the report prints.
            raise MalformedResults(
                f"{template.description}: the {label.site} row at pdf p{page_no} line {index + 1} has values "
                "that cannot be read; fewer sites would be stored than the report prints"
            )
        if label is None or cells is None:
            refuse_hidden_row(tokens, template, page_no, index)
            if columns is None:
                header.append(line)
            elif first is None:
                group = (
                    None  # a heading we cannot place ("Upper Neck"): the side rows under it are not the last group's
                )
            continue
        if not cells:
            if label.site and label.side is None:
                group = label.site  # "Neck" above " Left … / Right … / Mean …" rows
            elif columns is None:
                header.append(line)
            continue
        site = label.site or group
        if site is None:
            if any(cell.value is not None for cell in cells):
                # "Left 0.760 …" under a heading we could not place: its site is unknown, and
                # skipping it would store fewer sites than the report prints.
                raise MalformedResults(
                    f"{template.description}: a {label.side} row at pdf p{page_no} line {index + 1} has values but "
                    "its site heading is not one this layout is known to print; fewer sites would be stored than "
                    "the report prints"
                )
            continue
        if columns is None:
            columns = _columns_for(template, " ".join(header))
        if len(cells) > len(columns):
            raise MalformedResults(
                f"{template.description}: a results row (pdf p{page_no} line {index + 1}) has {len(cells)} values "
                f"but the header names {len(columns)} columns; the report layout may have changed"
            )
        row = {column.key: cell for column, cell in zip(columns, cells, strict=False)}
        units = {column.key: column.unit for column in columns}
        printed_unit = _BMD_UNIT.search(" ".join(header))
        if printed_unit and "bmd" in units:  # the page says which unit its BMD column is in
            units["bmd"] = "mg/cm2" if printed_unit["u"].lower() == "mg" else "g/cm2"
        bmd_cell = row.get("bmd")
        if bmd_cell is None or bmd_cell.value is None:
            continue
        bmd = bmd_to_g_cm2(bmd_cell.value, units.get("bmd"))
        where = f" (pdf p{page_no} line {index + 1})"
        _check_range(bmd, 0.05, 3.0, "BMD (g/cm²)", template, where)
        t = row["t"].value if "t" in row else None
        z = row["z"].value if "z" in row else None
        _check_range(t, -10.0, 10.0, "T-score", template, where)
        _check_range(z, -10.0, 10.0, "Z-score", template, where)
        side = need_side(site, label.side, page_side, template)
        provenance = f"pdf p{page_no} line {index + 1}"
        key = (site, side)
        if key in ctx.measurements:
            if abs(ctx.measurements[key].bmd - bmd) > 1e-9:
                # Two different values for one site in one report: keeping either would drop the
                # other without a word, and which one is right cannot be read from the page.
                raise MalformedResults(
                    f"{template.description}: {site}{'/' + side if side else ''} is printed twice with "
                    f"different BMDs ({ctx.measurements[key].provenance} and {provenance})"
                )
            continue
        ctx.measurements[key] = SiteMeasurement(
            site=site,
            side=side,
            bmd=bmd,
            t_score=t,
            z_score=z,
            bmc_g=row["bmc"].value if "bmc" in row else None,
            area_cm2=row["area"].value if "area" in row else None,
            provenance=provenance,
        )
        changes = {k: row[k] for k in CHANGE_KEYS if k in row and row[k].value is not None}
        if changes:
            ctx.history.append(history_row(site, side, ctx.exam_date, bmd, changes, provenance))
    return True
