"""The one engine that applies a layout template to a PDF's text lines.

Rows are read as "label, then values": the label is everything before the first number, so
"L2 - L4 0.720 …" and "Neck Left 0.658 …" keep their spaces and dashes. A label becomes a site
(and side) through the template's own labels, then the shared vocabulary, after peeling off a
side word ("Left", "左侧"). Values map to columns by the template's declared order, with the
optional columns of the layout kept or dropped by what the page's header says; vendors print a
placeholder ("-", "*****") for an empty cell, so the order holds. Anything doubtful raises: a
value on the wrong site or side would silently corrupt a patient's trend.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from ingest.dates import DateOrder, locale_order, parse_date
from ingest.errors import MalformedResults, MissingField
from ingest.pdf.template import CHANGE_KEYS, Column, HistorySpec, Template
from ingest.pdf.text import PdfText
from ingest.report import (
    DeviceIdentity,
    ParsedReport,
    PatientInfo,
    SiteMeasurement,
    VendorExtras,
    VendorHistoryRow,
)
from ingest.vocabulary import _fold, bmd_to_g_cm2, canonical_side, canonical_site, parse_decimal

_NUMBER = re.compile(r"^[-+−–]?\d+(?:[.,]\d+)?[%*#]*$")
_PLACEHOLDER = re.compile(r"^(?:[-–—]+|\*+|n/?a|nd|--)$", re.IGNORECASE)
_UNIT = re.compile(r"^(?:m?g/cm[²2]?|g/cm\^2|%|%/yr)$", re.IGNORECASE)
_LUMBAR_RANGE = re.compile(r"^L[1-5]-L[1-5]$")
_BMD_UNIT = re.compile(r"\bBMD\s*[(\[]?\s*(?P<u>m?g)\s*/\s*cm", re.IGNORECASE)
_CJK = re.compile(r"[\u3400-\u9fff]")

SIDED_SITES = frozenset(
    {
        "femoral_neck",
        "total_hip",
        "trochanter",
        "intertrochanter",
        "wards",
        "radius_33",
        "radius_ud",
        "radius_total",
    }
)
_HIP = frozenset({"femoral_neck", "total_hip", "trochanter", "intertrochanter", "wards"})
_FOREARM = frozenset({"radius_33", "radius_ud", "radius_total"})
_SEX = {"female": "F", "f": "F", "女": "F", "male": "M", "m": "M", "男": "M"}


@dataclass(frozen=True)
class Label:
    site: str | None  # None: the label names a side only (a row under a group header)
    side: str | None


@dataclass(frozen=True)
class Cell:
    value: float | None
    significant: bool = False  # vendor "*"
    dissimilar: bool = False  # vendor "#"


def _cell(token: str) -> Cell | None:
    """A value token, or None when the token is not a value (a word or a unit)."""
    if _NUMBER.match(token):
        return Cell(parse_decimal(token), "*" in token, "#" in token)
    if _PLACEHOLDER.match(token):
        return Cell(None)
    return None


def _site_of(label: str, template: Template) -> str | None:
    site = template.labels.get(_fold(label))
    return site if site else canonical_site(label)


def resolve_label(label: str, template: Template) -> Label | None:
    """Memoised per template: the same few dozen labels recur on every report of a layout."""
    cache: dict[str, Label | None] = template.label_cache
    try:
        return cache[label]
    except KeyError:
        pass
    if len(cache) > 4096:  # bounded: arbitrary label text must not grow it forever
        cache.clear()
    found = cache[label] = _resolve_label(label, template)
    return found


def _resolve_label(label: str, template: Template) -> Label | None:
    label = label.strip()
    if not label:
        return None
    site = _site_of(label, template)
    if site:
        return Label(site, None)
    lowered = label.lower()
    for word, side in template.side_words:
        w = word.lower()
        if lowered == w:
            return Label(None, side)
        glued = bool(_CJK.search(word))  # "左侧股骨颈": no space between side and site
        if lowered.startswith(w) and (glued or label[len(w) : len(w) + 1] == " "):
            site = _site_of(label[len(w) :], template)
            if site:
                return Label(site, side)
        if lowered.endswith(w) and (glued or label[-len(w) - 1 : -len(w)] == " "):
            site = _site_of(label[: -len(w)], template)
            if site:
                return Label(site, side)
    return None


def resolve_suffix(label: str, template: Template) -> Label | None:
    """The longest tail of `label` that names a site: "AP Spine L1-L4" → L1-L4,
    "DualFemur Total Mean" → total_hip/mean."""
    tokens = label.split()
    for i in range(len(tokens)):
        found = resolve_label(" ".join(tokens[i:]), template)
        if found and found.site:
            return found
    return None


def _split_row(tokens: Sequence[str], template: Template) -> tuple[Label | None, list[str]]:
    """Split a row into its label and value tokens; a label may end in a number-like token
    ("Radius 33%")."""
    first = next((i for i, t in enumerate(tokens) if _NUMBER.match(t)), None)
    if first is None:
        return resolve_label(" ".join(tokens), template), []
    found = resolve_label(" ".join(tokens[:first]), template) if first else None
    if found is None and first < len(tokens):
        longer = resolve_label(" ".join(tokens[: first + 1]), template)
        if longer is not None:
            return longer, list(tokens[first + 1 :])
    return found, list(tokens[first:])


def _refuse_hidden_row(tokens: Sequence[str], template: Template, page_no: int, index: int) -> None:
    """A line we do not read as a row may still hold one after a value ("Neck Diff. 0.005 - -
    Total Left 0.759 …": two rows run together by a rotated or re-flowed page). Skipping the line
    would drop that site without a word, so the file is refused instead."""
    for i in range(1, len(tokens) - 1):
        if _cell(tokens[i - 1]) is None or _cell(tokens[i]) is not None:
            continue
        label, rest = _split_row(tokens[i:], template)
        first = _cell(rest[0]) if rest else None
        if label is not None and label.site and first is not None and first.value is not None:
            raise MalformedResults(
                f"{template.description}: pdf p{page_no} line {index + 1} runs two results rows together "
                "(a rotated or re-flowed page?); the sites cannot be read with certainty"
            )


def _values(tokens: Iterable[str]) -> list[Cell] | None:
    cells: list[Cell] = []
    for token in tokens:
        if _UNIT.match(token):
            continue
        cell = _cell(token)
        if cell is None:
            return None  # a word among the values: not a result row
        cells.append(cell)
    return cells


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


@dataclass
class _Context:
    template: Template
    exam_date: date
    measurements: dict[tuple[str, str | None], SiteMeasurement]
    history: list[VendorHistoryRow]
    notes: list[str]
    date_order: DateOrder = "DMY"


def _need_side(site: str, side: str | None, context_side: str | None, template: Template) -> str | None:
    if site not in SIDED_SITES:
        return None
    side = side or context_side
    if side is None:
        where = "hip" if site in _HIP else "forearm"
        raise MissingField(
            f"side of the {where} (left or right): {template.description} row has no side "
            "and the page does not name one"
        )
    return side


def _check_range(value: float | None, low: float, high: float, what: str, template: Template, where: str = "") -> None:
    if value is not None and not low <= value <= high:
        raise MalformedResults(
            f"{template.description}: a {what} of {value}{where} is outside {low}..{high}; "
            "the results columns are not where the layout says"
        )


def _parse_table(ctx: _Context, page_no: int, lines: Sequence[str], page_side: str | None) -> bool:
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
        label, value_tokens = _split_row(tokens, template)
        cells = _values(value_tokens) if label else None
        if label is None and _NUMBER.match(tokens[0]) and len(tokens) >= 2 and _values(tokens):
            # Values with no label in front: the row's label went elsewhere (a rotated page read in
            # another order, a wrapped line). Reading on would drop or misplace a printed site.
            raise MalformedResults(
                f"{template.description}: a results row at pdf p{page_no} line {index + 1} has values but no "
                "site label (a rotated or re-flowed page?); its site cannot be told with certainty"
            )
        if label is not None and label.site and cells is None and columns is not None:
            # A printed row of a site whose values cannot be read ("L2 0.703 n.a. -2.9"): skipping
            # it would store fewer sites than the report prints.
            raise MalformedResults(
                f"{template.description}: the {label.site} row at pdf p{page_no} line {index + 1} has values "
                "that cannot be read; fewer sites would be stored than the report prints"
            )
        if label is None or cells is None:
            _refuse_hidden_row(tokens, template, page_no, index)
            if columns is None:
                header.append(line)
            continue
        if not cells:
            if label.site and label.side is None:
                group = label.site  # "Neck" above " Left … / Right … / Mean …" rows
            elif columns is None:
                header.append(line)
            continue
        site = label.site or group
        if site is None:
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
        side = _need_side(site, label.side, page_side, template)
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
            ctx.history.append(_history_row(site, side, ctx.exam_date, bmd, changes, provenance))
    return True


def _history_row(
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


def _merge_history(rows: Sequence[VendorHistoryRow]) -> tuple[VendorHistoryRow, ...]:
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


def _wide_header(line: str, template: Template) -> list[Label]:
    """Sites named across a header row, longest spans first ("腰椎 L1-L4 左侧股骨颈 左侧全髋")."""
    tokens = line.split()
    found: list[Label] = []
    i = 0
    while i < len(tokens):
        for j in range(len(tokens), i, -1):
            label = resolve_label(" ".join(tokens[i:j]), template)
            if label and label.site:
                found.append(label)
                i = j
                break
        else:
            i += 1
    return found


def _parse_history(ctx: _Context, spec: HistorySpec, page_no: int, lines: Sequence[str], page_side: str | None) -> None:
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
                    sites = _wide_header(row, template)
                continue
            when = parse_date(dated["date"], ctx.date_order)
            cells = _values(row[dated.end() :].split())
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
                side = _need_side(label.site, label.side, page_side, template)
                bmd_cell = keyed.get("bmd")
                bmd = bmd_cell.value if bmd_cell else None
                changes = {k: c for k, c in keyed.items() if k in CHANGE_KEYS}
                ctx.history.append(_history_row(label.site, side, when, bmd, changes, provenance))


def _field(template: Template, text: str, name: str) -> str | None:
    pattern = template.fields.get(name)
    match = pattern.search(text) if pattern else None
    return (match["v"].strip() or None) if match else None


def _metadata_field(template: Template, metadata: dict[str, str], name: str) -> str | None:
    pattern = template.metadata_fields.get(name)
    if pattern is None:
        return None
    for value in metadata.values():
        match = pattern.search(value)
        if match:
            return match["v"].strip() or None
    return None


def _side_in(template: Template, text: str) -> str | None:
    for pattern in template.side_context:
        match = pattern.search(text)
        if match:
            side = canonical_side(match["side"])
            if side:
                return side
    return None


def _scan_type(measurements: Iterable[SiteMeasurement]) -> str:
    kinds: set[str] = set()
    hip_sides: set[str | None] = set()
    for m in measurements:
        if m.site.startswith("L"):
            kinds.add("spine")
        elif m.site in _HIP:
            kinds.add("hip")
            hip_sides.add(m.side)
        elif m.site in _FOREARM:
            kinds.add("forearm")
        elif m.site == "total_body":
            kinds.add("total_body")
    if len(kinds) != 1:
        return "mixed"
    kind = kinds.pop()
    if kind == "hip" and len(hip_sides) > 1:
        return "dual_hip"
    return kind


def _analysed_range_first(measurements: Iterable[SiteMeasurement]) -> tuple[SiteMeasurement, ...]:
    """Lumbar ranges widest first, then the rest in printed order: `ParsedReport.vertebral_set`
    takes the first range, and the widest printed range is the analysed set (L1-L4 rather than the
    L1-L2 that Hologic and GE print first)."""
    items = list(measurements)

    def width(m: SiteMeasurement) -> int:
        return int(m.site[-1]) - int(m.site[1]) if _LUMBAR_RANGE.match(m.site) else -1

    ranges = sorted((m for m in items if width(m) > 0), key=width, reverse=True)
    return tuple(ranges + [m for m in items if width(m) <= 0])


def _default_lsc_site(measurements: dict[tuple[str, str | None], SiteMeasurement]) -> str | None:
    """The site a printed LSC without a site belongs to: the page's trended region."""
    sites = {site for site, _ in measurements}
    for preferred in ("L1-L4", "total_hip", "femoral_neck", "radius_33", "total_body"):
        if preferred in sites:
            return preferred
    ranges = sorted((s for s in sites if "-" in s), key=lambda s: int(s[-1]) - int(s[1]), reverse=True)
    return ranges[0] if ranges else None


def apply_template(
    template: Template, text: PdfText, *, first_page: int = 1, identity_optional: bool = False
) -> ParsedReport:
    """One report's pages; `first_page` is the file page number of its first page, so that every
    value's provenance names the page of the file it was read from. `identity_optional` (OCR of a
    scan, which a person confirms) reads the rest of a page whose patient ID could not be read,
    with an empty ID (and a machine line it could not read with an empty model): the reviewer types
    it, the page is never attached to anyone before."""
    joined_pages = ["\n".join(lines) for lines in text.pages]
    full = "\n".join(joined_pages)
    what = template.description

    patient_id = _field(template, full, "patient_id")
    if not patient_id and identity_optional:
        patient_id = ""
    elif not patient_id:
        raise MissingField(f"patient ID: not found in the {what} text")
    raw_date = _field(template, full, "exam_date")
    if not raw_date:
        raise MissingField(f"exam date: not found in the {what} text")
    # A layout printed in another locale says so in its word dates ("July 7, 2015" is a US
    # printout): its numeric dates follow that locale, never a guess from one number's size.
    date_order = locale_order(raw_date) or template.date_order
    exam_date = parse_date(raw_date, date_order)
    if exam_date is None:
        raise MissingField(f"exam date: the {what} date could not be read as a complete date")

    device = None
    for pattern in template.device.lines:
        match = pattern.search(full)
        if match:
            serial = match["serial"] if "serial" in pattern.groupindex else None
            device = (match["model"].strip(), serial.strip() if serial else None)
            break
    if device is None and identity_optional:
        device = ("", None)  # a scan's reviewer reads the machine off the page
    elif device is None:
        raise MissingField(f"device model: no device line found in the {what} text")

    birth_raw = _field(template, full, "birth_date")
    name = None
    name_pattern = template.fields.get("name")
    name_match = name_pattern.search(full) if name_pattern else None
    if name_match and "v" in name_match.groupdict():
        name = name_match["v"].strip() or None
    elif name_match:
        name = f"{name_match['family'].strip()}^{name_match['given'].strip()}".upper()
    sex_raw = _field(template, full, "sex")
    patient = PatientInfo(
        patient_id=patient_id,
        name=name,
        birth_date=parse_date(birth_raw, date_order) if birth_raw else None,
        sex=_SEX.get(sex_raw.lower()) if sex_raw else None,
    )

    ctx = _Context(template=template, exam_date=exam_date, measurements={}, history=[], notes=[], date_order=date_order)
    doc_side = _side_in(template, full)
    found_table = False
    for page_no, (lines, page_text) in enumerate(zip(text.pages, joined_pages, strict=True), start=first_page):
        page_side = _side_in(template, page_text) or doc_side
        found_table = _parse_table(ctx, page_no, lines, page_side) or found_table
        for spec in template.history:
            _parse_history(ctx, spec, page_no, lines, page_side)
    if not found_table:
        raise MalformedResults(f"{what}: the results table heading was not found")
    if not ctx.measurements:
        raise MalformedResults(f"{what}: the results table holds no readable BMD rows")

    lsc: dict[str, float] = {}
    for pattern in template.lsc:
        for match in pattern.finditer(full):
            value = parse_decimal(match["v"])
            site_label = match["site"] if "site" in pattern.groupindex else None
            resolved = resolve_suffix(site_label, template) if site_label else None
            site = resolved.site if resolved else _default_lsc_site(ctx.measurements)
            if value is not None and site and site not in lsc:
                lsc[site] = value

    def field(name: str) -> str | None:
        return _field(template, full, name) or _metadata_field(template, text.metadata, name)

    return ParsedReport(
        format=template.name,
        patient=patient,
        exam_date=exam_date,
        device=DeviceIdentity(
            manufacturer=template.device.manufacturer,
            model=device[0],
            serial=device[1],
            software_version=field("software_version"),
        ),
        scan_type=_scan_type(ctx.measurements.values()),
        measurements=_analysed_range_first(ctx.measurements.values()),
        accession=field("accession"),
        scan_mode=field("scan_mode"),
        analysis_protocol=field("analysis_protocol"),
        extras=VendorExtras(
            history=_merge_history(ctx.history),
            printed_lsc_g_cm2=tuple(lsc.items()),
            reference_database=field("reference_database"),
            notes=tuple(ctx.notes),
        ),
    )
