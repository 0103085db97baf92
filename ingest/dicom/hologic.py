"""Hologic APEX results: the text blob in private element (0019,xx00) of creator HOLOGIC.

The blob is not XML: a `<HologicHeader1>` pseudo-XML header, then `<JavaScriptFile …>`
sections of `Name = "value";` lines. Results sit in `ResultsTableN[ r][ c]` cells whose
meaning is given by `TableColumnTypesN[c]` codes and the header row; columns are mapped by
code and header together, never by position, because layouts add, drop and reorder columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from pydicom.dataset import Dataset

from ingest.dates import parse_date
from ingest.dicom import header as h
from ingest.dicom.dates import Order, resolve_order, separator_default
from ingest.dicom.sites import Region, region_and_side, site_in, split_side
from ingest.errors import MalformedResults, MissingField, NotDxaResult, PatientMismatch, UnsupportedLayout
from ingest.report import ParsedReport, SiteMeasurement, VendorExtras, VendorHistoryRow
from ingest.vocabulary import bmd_to_g_cm2, canonical_side, canonical_site, lumbar_site, parse_cell, parse_decimal

FORMAT = "hologic_apex_dicom"
CREATOR = "HOLOGIC"
_GROUP = 0x0019

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


def find_results_element(ds: Dataset) -> bytes | str | None:
    """The (0019,xx00) value of the block reserved by private creator HOLOGIC, if any.

    The block number is whatever (0019,00xx) holds 'HOLOGIC'; it is usually 0x10 but a
    re-exported file may move it, so (0019,1000) is never assumed.
    """
    creators = [int(e.tag) for e in ds.elements() if e.tag >> 8 == (_GROUP << 8) and e.tag & 0xFF >= 0x10]
    for tag in creators:
        name = h.text(ds, tag)
        if name and name.upper().startswith(CREATOR):
            elem = ds.get((_GROUP << 16) | ((tag & 0xFF) << 8))
            if elem is not None and isinstance(elem.value, (bytes, str)) and elem.value:
                return elem.value
    return None


_BLOB_SIGNATURE = re.compile(rb"<HologicHeader\d|<JavaScriptFile\b|\bResultsTable\d+\s*\[")


def find_results_by_content(ds: Dataset) -> bytes | str | None:
    """The Hologic results block found by what it holds, not by its private creator: a router
    that strips private creator elements ((0019,0010) 'HOLOGIC') leaves the block itself in place,
    and its results are still the file's results. Only private elements are looked at."""
    for elem in ds.elements():
        tag = int(elem.tag)
        if not (tag >> 16) & 1 or tag & 0xFF00 == 0:  # public group, or a private creator element
            continue
        value = ds[elem.tag].value if not isinstance(elem.value, (bytes, str)) else elem.value
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        if isinstance(value, bytes) and len(value) > 64 and _BLOB_SIGNATURE.search(value[:4096]):
            return value
    return None


def has_hologic_creator(ds: Dataset) -> bool:
    return find_results_element(ds) is not None


def decode_blob(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_SECTION = re.compile(r"<JavaScriptFile\b[^>]*>(.*?)(?:</JavaScriptFile>|\Z)", re.S)
_ASSIGN = re.compile(
    r"^[ \t]*(?P<name>[A-Za-z_]\w*)[ \t]*(?P<idx>(?:\[[ \t]*\d+[ \t]*\])*)[ \t]*=[ \t]*"
    r"(?:\"(?P<q>[^\r\n]*)\"|(?P<u>[^;\r\n]*?))[ \t]*;",
    re.M,
)
_IDX = re.compile(r"\d+")


@dataclass
class Blob:
    scalars: dict[str, str] = field(default_factory=dict)
    cells: dict[str, dict[tuple[int, ...], str]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        v = self.scalars.get(name)
        return v.strip() if v is not None and v.strip() else None


def parse_blob(text: str) -> Blob:
    """Read every `Name = value;` / `Name[ i][ j] = value;` line of the JavaScript sections."""
    blob = Blob()
    for section in _SECTION.finditer(text):
        for m in _ASSIGN.finditer(section.group(1)):
            name, idx, quoted, bare = m.group("name", "idx", "q", "u")
            val = quoted if quoted is not None else bare
            if idx:
                key = tuple(int(i) for i in _IDX.findall(idx))
                blob.cells.setdefault(name, {})[key] = val
            elif name not in blob.scalars:
                blob.scalars[name] = val
    return blob


_TAGS = re.compile(r"<[^>]+>")


def _strip_html(text: str) -> str:
    return re.sub(r"\s+", " ", _TAGS.sub("", text)).strip()


def _header_role(header: str) -> str | None:
    t = _strip_html(header).lower()
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
    m = re.search(r"\[\s*\(?([^\]\)]*)\)?\s*\]|\(([^)]*/[^)]*)\)", _strip_html(header))
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


def _tables(blob: Blob) -> list[Table]:
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
                    f"{by_code.upper()} but headed '{_strip_html(head)}'"
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
                title=_strip_html(blob.get(f"TableTitle{n}") or ""),
                kind=int(kind_raw) if kind_raw is not None else None,
                columns=columns,
                units=units,
                rows=rows,
                cells=cells,
            )
        )
    return tables


def _is_summary(t: Table) -> bool:
    return t.kind == 1 or "summary" in t.title.lower()


def _is_history(t: Table) -> bool:
    return t.kind == 2 or "history" in t.title.lower()


@dataclass
class _Context:
    region: Region
    side: str | None


def _context(ds: Dataset, blob: Blob, tables: list[Table]) -> _Context:
    protocol = blob.get("AnalProtocol") or ""
    mode = blob.get("ScanMode") or ""
    region, side = region_and_side(protocol)
    if region is None:
        region, side = region_and_side(mode)
    if side is None:
        side = region_and_side(mode)[1]
    dual = any("(mean)" in t.title.lower() for t in tables if _is_summary(t)) or any(
        (t.cell(r, "region") or "").strip().lower() == "mean" for t in tables if _is_summary(t) for r in t.rows
    )
    if dual:
        return _Context("dual_hip", "mean")
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
    return _Context(region, side)


def _summary_measurements(t: Table, ctx: _Context) -> list[SiteMeasurement]:
    if "bmd" not in t.columns:
        raise MalformedResults(
            f"Hologic results table {t.number} has no BMD column (header and cells do not line up): "
            "no bone density can be read; re-export the scan from the Hologic workstation"
        )
    if "region" not in t.columns:
        raise MalformedResults(f"Hologic results table {t.number} has no Region column")
    unit = t.units.get("bmd")
    title_site: str | None = None
    if ctx.region == "dual_hip":
        m = re.search(r"summary\s+(.*?)\s*\(", t.title, re.I)
        title_site = site_in(m.group(1), "dual_hip") if m else None
    out: list[SiteMeasurement] = []
    vertebrae: list[int] = []
    total_row: int | None = None
    for r in t.rows:
        label = _strip_html(t.cell(r, "region") or "")
        bmd = parse_cell(t.cell(r, "bmd"), "BMD")
        if not label or bmd is None:
            continue
        site: str | None
        if title_site:  # dual-hip table per region: rows are Left / Right / Mean / |Diff.|
            site, side = title_site, canonical_side(label.strip(" .|:"))
        elif ctx.region == "spine" and label.lower() == "total":
            total_row = r
            continue
        else:
            site, side = site_in(label, ctx.region), ctx.side
            if site is None and ctx.region == "dual_hip":  # rows like "Neck Left"
                base, side, _ = split_side(label)
                site = site_in(base, "dual_hip")
        if site is None or (side is None and ctx.region != "spine"):
            continue  # MID, |Diff.|: not vocabulary
        if ctx.region == "spine" and re.fullmatch(r"L[1-5]", site):
            vertebrae.append(int(site[1]))
        out.append(_measurement(t, r, site, side, bmd, unit))
    if total_row is not None:
        site = _spine_range(vertebrae, _strip_html(t.cell(total_row, "region") or ""))
        bmd = parse_cell(t.cell(total_row, "bmd"), "BMD")
        if site and bmd is not None:
            out.append(_measurement(t, total_row, site, None, bmd, unit))
    return out


def _spine_range(vertebrae: list[int], label: str) -> str | None:
    """The Total row is the analysed range: the vertebrae listed (and so included) above it.
    A non-contiguous set (L1, L2, L4) is not a vocabulary site and is left out."""
    explicit = lumbar_site(label)
    if explicit and "-" in explicit:
        return explicit
    vs = sorted(set(vertebrae))
    if len(vs) < 2 or vs != list(range(vs[0], vs[-1] + 1)):
        return None
    return f"L{vs[0]}-L{vs[-1]}"


def _measurement(t: Table, r: int, site: str, side: str | None, bmd: float, unit: str | None) -> SiteMeasurement:
    return SiteMeasurement(
        site=site,
        side=side,
        bmd=bmd_to_g_cm2(bmd, unit),
        t_score=parse_cell(t.cell(r, "t"), "T-score"),
        z_score=parse_cell(t.cell(r, "z"), "Z-score"),
        bmc_g=parse_cell(t.cell(r, "bmc"), "BMC"),
        area_cm2=parse_cell(t.cell(r, "area"), "area"),
        provenance=t.ref(r, "bmd"),
    )


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


def _history(t: Table, ctx: _Context, default_site: str | None, order: Order) -> list[VendorHistoryRow]:
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
            base, row_side, had = split_side(_strip_html(label))
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


def _printed_lsc(blob: Blob, ctx: _Context, default_site: str | None) -> tuple[tuple[str, float], ...]:
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


def _locale_order(blob: Blob, raws: list[str], exam: date) -> Order:
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


def _scan_type(ctx: _Context) -> str:
    return {"spine": "spine", "hip": "hip", "dual_hip": "dual_hip", "forearm": "forearm"}.get(ctx.region, "total_body")


def parse_hologic(ds: Dataset, name: str, raw: bytes | str | None = None) -> ParsedReport:
    raw = raw if raw is not None else find_results_element(ds)
    if raw is None:
        raise NotDxaResult(
            "no results: this Hologic image has no private results data (0019,xx00) of creator "
            "HOLOGIC; the numbers are only pixels. Export with results enabled or send the PDF report"
        )
    blob = parse_blob(decode_blob(raw))
    tables = _tables(blob)
    summaries = [t for t in tables if _is_summary(t)]
    if not summaries:
        raise NotDxaResult("no results: the Hologic private data holds no results summary table")
    ctx = _context(ds, blob, tables)
    measurements: list[SiteMeasurement] = []
    for t in summaries:
        measurements.extend(_summary_measurements(t, ctx))
    if not measurements:
        raise NotDxaResult("no results: the Hologic results table lists no BMD for a known site")
    exam = h.exam_date(ds)
    graph = blob.get("GraphTitle1")
    default_site = site_in(graph, ctx.region) if graph else None
    if default_site is None and ctx.region == "spine":
        default_site = next((m.site for m in measurements if "-" in m.site), None)
    histories = [t for t in tables if _is_history(t)]
    raws = [t.cell(r, "date") or "" for t in histories for r in t.rows]
    order = _locale_order(blob, raws, exam)
    history: list[VendorHistoryRow] = []
    for t in histories:
        history.extend(_history(t, ctx, default_site, order))
    ref_db = blob.get("GraphTitle2")
    notes = tuple(n for n in (blob.get("TableNote1"),) if n)
    software = blob.get("HologicSoftwareVer")
    dev = h.device(ds, fallback_model=blob.get("Model"), software=software, serial_from_model=True)
    patient = h.patient(ds)
    in_blob = blob.get("PatientID")
    if in_blob and patient.patient_id and in_blob.casefold() != patient.patient_id.strip().casefold():
        raise PatientMismatch(
            "the DICOM header names another patient than the Hologic results inside the file; "
            "check which patient these results belong to before re-processing"
        )
    return ParsedReport(
        format=FORMAT,
        patient=patient,
        exam_date=exam,
        device=dev,
        scan_type=_scan_type(ctx),
        measurements=tuple(measurements),
        scan_mode=blob.get("ScanMode"),
        analysis_protocol=blob.get("AnalProtocol"),
        extras=VendorExtras(
            history=tuple(history),
            printed_lsc_g_cm2=_printed_lsc(blob, ctx, default_site),
            reference_database=ref_db,
            notes=notes,
        ),
        **h.uids(ds),
    )
