"""Hologic results tables (`ResultsTableN[r][c]`) and the scan they describe.

Column meaning is given by `TableColumnTypesN[c]` codes and the header row together, never by
position, because layouts add, drop and reorder columns; a code and a header that disagree mean
a damaged table, which is refused rather than read into the wrong column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset

from ingest.dicom import header as h
from ingest.dicom.hologic_blob import Blob
from ingest.dicom.sites import Region, region_and_side
from ingest.errors import MalformedResults, MissingField, UnsupportedLayout
from ingest.vocabulary import parse_decimal

# TableColumnTypesN codes seen in APEX exports, and the header words each must agree with.
_CODE_ROLE = {
    1: "region",
    2: "area",
    3: "bmd",
    4: "bmc",
    5: "t",
    6: "z",
    7: "pr",
    13: "am",
    16: "date",
    17: "age",
    18: "chg_base",
    19: "chg_prev",
}


_TAGS = re.compile(r"<[^>]+>")


def strip_html(text: str) -> str:
    return re.sub(r"\s+", " ", _TAGS.sub("", text)).strip()


def _header_role(header: str) -> str | None:
    t = strip_html(header).lower()
    if not t:
        return None
    if "change" in t:
        if "baseline" in t:
            return "chg_base"
        if "previous" in t:
            return "chg_prev"
        return None
    if t.startswith("region"):
        return "region"
    if t.startswith("area"):
        return "area"
    if t.startswith("bmc"):
        return "bmc"
    if t.startswith("bmd"):
        return "bmd"
    if re.match(r"t[\s-]?score", t):
        return "t"
    if re.match(r"z[\s-]?score", t):
        return "z"
    if t.startswith("pr") or "peak" in t:
        return "pr"
    if t.startswith("am") or "age matched" in t:
        return "am"
    if "date" in t:
        return "date"
    if t == "age":
        return "age"
    return None


def _header_unit(header: str) -> str | None:
    m = re.search(r"\[\s*\(?([^\]\)]*)\)?\s*\]|\(([^)]*/[^)]*)\)", strip_html(header))
    if not m:
        return None
    unit = (m.group(1) or m.group(2) or "").strip()
    return unit or None


@dataclass
class Table:
    number: int
    title: str
    kind: int | None
    columns: dict[str, int]  # role -> column index
    units: dict[str, str | None]
    rows: list[int]
    cells: dict[tuple[int, ...], str]

    def cell(self, row: int, role: str) -> str | None:
        col = self.columns.get(role)
        if col is None:
            return None
        return self.cells.get((row, col))

    def ref(self, row: int, role: str) -> str:
        return f"ResultsTable{self.number}[{row}][{self.columns.get(role, '?')}]"


def results_tables(blob: Blob) -> list[Table]:
    tables: list[Table] = []
    numbers = sorted(int(k[len("ResultsTable") :]) for k in blob.cells if re.fullmatch(r"ResultsTable\d+", k))
    for n in numbers:
        if (blob.get(f"IncludeTable{n}") or "true").lower() == "false":
            continue
        cells = blob.cells[f"ResultsTable{n}"]
        codes = blob.cells.get(f"TableColumnTypes{n}", {})
        row_types = blob.cells.get(f"TableRowTypes{n}", {})
        ncols = 1 + max((k[1] for k in cells if len(k) == 2), default=-1)
        columns: dict[str, int] = {}
        units: dict[str, str | None] = {}
        for c in range(ncols):
            head = cells.get((0, c), "")
            by_header = _header_role(head)
            code = parse_decimal(codes.get((c,)))
            by_code = _CODE_ROLE.get(int(code)) if code is not None else None
            if by_code and by_header and by_code != by_header:
                raise MalformedResults(
                    f"Hologic results table {n} is damaged: column {c} is typed "
                    f"{by_code.upper()} but headed '{strip_html(head)}'"
                )
            role = by_code or by_header
            if role and role not in columns:
                columns[role] = c
                units[role] = _header_unit(head)
        rows = sorted(
            {k[0] for k in cells if len(k) == 2 and k[0] > 0}
            - {r[0] for r, t in row_types.items() if parse_decimal(t) == 0}
        )
        kind_raw = parse_decimal(blob.get(f"TableType{n}"))
        tables.append(
            Table(
                number=n,
                title=strip_html(blob.get(f"TableTitle{n}") or ""),
                kind=int(kind_raw) if kind_raw is not None else None,
                columns=columns,
                units=units,
                rows=rows,
                cells=cells,
            )
        )
    return tables


def is_summary(t: Table) -> bool:
    return t.kind == 1 or "summary" in t.title.lower()


def is_history(t: Table) -> bool:
    return t.kind == 2 or "history" in t.title.lower()


@dataclass
class ScanContext:
    region: Region
    side: str | None


def scan_context(ds: Dataset, blob: Blob, tables: list[Table]) -> ScanContext:
    protocol = blob.get("AnalProtocol") or ""
    mode = blob.get("ScanMode") or ""
    region, side = region_and_side(protocol)
    if region is None:
        region, side = region_and_side(mode)
    if side is None:
        side = region_and_side(mode)[1]
    dual = any("(mean)" in t.title.lower() for t in tables if is_summary(t)) or any(
        (t.cell(r, "region") or "").strip().lower() == "mean" for t in tables if is_summary(t) for r in t.rows
    )
    if dual:
        return ScanContext("dual_hip", "mean")
    if region is None:
        raise UnsupportedLayout(
            "Hologic results found but the scan type is not recognised (ScanMode/AnalProtocol); "
            "supported: spine, hip, dual hip, forearm"
        )
    if region in ("hip", "forearm") and side is None:
        lat = (h.text(ds, h.T_LATERALITY) or "").upper()
        side = {"L": "left", "R": "right"}.get(lat)
        if side is None:
            raise MissingField("scan side: neither AnalProtocol, ScanMode nor Laterality says left or right")
    if region in ("spine", "total_body"):
        side = None
    return ScanContext(region, side)
