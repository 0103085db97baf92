"""Declarative PDF layouts: one TOML file per vendor printout, read once into frozen dataclasses.

A layout is data (markers, labels, columns, date order, device-line patterns), so that supporting
a new printout means writing a template, not a parser. The loader is strict: an unknown key or a
regex without its named group fails at import time, in the template author's hands rather than
on a patient's file. See `templates/README.md` for the schema.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from ingest.dates import LayoutOrder
from ingest.vocabulary import _fold, canonical_side  # the vocabulary's own folding, so label lookups agree

TextSource = Literal["pdfium", "pdfplumber"]

TEMPLATE_DIR = Path(__file__).with_name("templates")

# Column keys the engine understands; any other key is kept out of the report (read and dropped).
MEASUREMENT_KEYS = frozenset({"bmd", "t", "z", "bmc", "area"})
CHANGE_KEYS = frozenset({"chg_prev_g", "chg_prev_pct", "chg_base_g", "chg_base_pct"})
HISTORY_KEYS = frozenset({"date", "bmd"}) | CHANGE_KEYS


class TemplateError(ValueError):
    """A template file is malformed (raised at load time, never while parsing a patient file)."""


@dataclass(frozen=True)
class Column:
    key: str  # "bmd", "t", "z", "bmc", "area", a change key, or any name for a column that is skipped
    header: re.Pattern[str] | None  # how the column's header reads; needed when optional
    optional: bool = False  # present on some pages of the layout only (decided by its header)
    unit: str | None = None  # BMD unit for a "bmd" column ("g/cm2", "mg/cm2")


@dataclass(frozen=True)
class DeviceSpec:
    manufacturer: str  # as the identity is spelt for this vendor ("HOLOGIC", "GE Healthcare")
    lines: tuple[re.Pattern[str], ...]  # each with (?P<model>) and optionally (?P<serial>)


@dataclass(frozen=True)
class TableSpec:
    start: re.Pattern[str]
    end: tuple[re.Pattern[str], ...]
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class HistorySpec:
    """A vendor trend table. `long`: a title naming one site, then one row per date with `columns`.
    `wide`: a title, a header row naming one site per column, then one row per date of BMDs."""

    title: re.Pattern[str]  # (?P<site>) required for "long"
    shape: Literal["long", "wide"]
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Template:
    name: str  # ParsedReport.format, e.g. "pdf_hologic"
    description: str
    source_file: str
    date_order: LayoutOrder  # "locale": proved per report (`ingest.pdf.date_order`)
    text_source: TextSource
    detect_all: tuple[re.Pattern[str], ...]
    fields: Mapping[str, re.Pattern[str]]
    metadata_fields: Mapping[str, re.Pattern[str]]  # read from the PDF Info dictionary (e.g. Creator)
    device: DeviceSpec
    side_words: tuple[tuple[str, str], ...]  # (word, side) naming a side inside a row label, longest first
    side_context: tuple[re.Pattern[str], ...]  # page-level side of a one-sided scan, (?P<side>)
    labels: Mapping[str, str]  # extra folded label -> site, checked before the shared vocabulary
    table: TableSpec
    lsc: tuple[re.Pattern[str], ...]  # (?P<v>) and optionally (?P<site>)
    history: tuple[HistorySpec, ...]
    date_pattern: re.Pattern[str]  # a date at the start of a trend row
    # resolved row labels (engine-owned memo; not part of the template's identity)
    label_cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, hash=False)


# A printed date in any spelling vendors' software prints in the locales it ships: US "July 7, 2015",
# "Jul 7, 2015", "07/07/2015"; UK "7 July 2015", "07.07.2015", "07-Jul-2015"; ISO "2015-07-07";
# Chinese "2015年7月7日", "2015-7-7"; "7 de julio de 2015". Which number is the day is the
# template's date_order, never this pattern's business. The Chinese 年/月/日 are optional because
# pdfium drops a CJK glyph that directly follows a Latin run ("2016 03 18"). Templates write
# `{date}` in a field's regex for this pattern, so that no field accepts only the sample's spelling.
DATE_SPELLINGS = (
    r"(?:\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日?"
    r"|\d{4}\s*[-./]\s*\d{1,2}\s*[-./]\s*\d{1,2}(?!\d)"
    r"|\d{1,2}\s*[-./]\s*\d{1,2}\s*[-./]\s*\d{4}"
    r"|\d{1,2}(?:st|nd|rd|th|er|\.)?[\s-]+(?:de\s+)?[^\W\d_]{3,10}\.?,?[\s-]+(?:de\s+)?\d{4}"
    r"|[^\W\d_]{3,10}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})"
)
# A date at the start of a trend row: any spelling above, or pdfium's "2016 03 18".
DEFAULT_DATE_PATTERN = r"(?:" + DATE_SPELLINGS + r"|\d{4}\s+\d{1,2}\s+\d{1,2}(?!\d))"
DATE_PLACEHOLDER = "{date}"

_TOP_KEYS = {
    "name",
    "description",
    "date_order",
    "text_source",
    "date_pattern",
    "detect",
    "fields",
    "metadata_fields",
    "device",
    "sides",
    "labels",
    "table",
    "lsc",
    "history",
}
_FIELD_NAMES = {
    "patient_id",
    "exam_date",
    "birth_date",
    "sex",
    "name",
    "accession",
    "software_version",
    "reference_database",
    "scan_mode",
    "analysis_protocol",
    "scan_id_date",
}
# Fields whose regex names other groups than (?P<v>): the scan ID's encoded date (month first).
_FIELD_GROUPS: dict[str, tuple[str, ...]] = {"name": (), "scan_id_date": ("mm", "dd", "yy")}


def _compile(source: str, where: str, groups: tuple[str, ...] = ()) -> re.Pattern[str]:
    try:
        # Case-insensitive: a printout configured in capitals ("DXA RESULTS SUMMARY", "NECK") is
        # the same layout.
        pattern = re.compile(source, re.MULTILINE | re.IGNORECASE)
    except re.error as exc:
        raise TemplateError(f"{where}: bad regex {source!r}: {exc}") from exc
    missing = [g for g in groups if g not in pattern.groupindex]
    if missing:
        raise TemplateError(f"{where}: regex {source!r} lacks the named group(s) {missing}")
    return pattern


def _expand(source: str) -> str:
    return source.replace(DATE_PLACEHOLDER, DATE_SPELLINGS)


def _table(raw: Mapping[str, Any], where: str) -> TableSpec:
    unknown = set(raw) - {"start", "end", "columns"}
    if unknown:
        raise TemplateError(f"{where}: unknown key(s) {sorted(unknown)}")
    columns: list[Column] = []
    for i, col in enumerate(raw["columns"]):
        if isinstance(col, str):
            col = {"key": col}
        bad = set(col) - {"key", "header", "optional", "unit"}
        if bad:
            raise TemplateError(f"{where}.columns[{i}]: unknown key(s) {sorted(bad)}")
        header = col.get("header")
        optional = bool(col.get("optional", False))
        if optional and not header:
            raise TemplateError(f"{where}.columns[{i}]: an optional column needs a header regex")
        columns.append(
            Column(
                key=str(col["key"]),
                header=_compile(header, f"{where}.columns[{i}]") if header else None,
                optional=optional,
                unit=col.get("unit"),
            )
        )
    if not any(c.key == "bmd" for c in columns):
        raise TemplateError(f"{where}: the table has no 'bmd' column")
    return TableSpec(
        start=_compile(raw["start"], f"{where}.start"),
        end=tuple(_compile(e, f"{where}.end") for e in raw.get("end", ())),
        columns=tuple(columns),
    )


def _history(raw: Mapping[str, Any], where: str) -> HistorySpec:
    shape = raw.get("shape", "long")
    if shape not in ("long", "wide"):
        raise TemplateError(f"{where}: shape must be 'long' or 'wide'")
    columns = tuple(str(c) for c in raw.get("columns", ()))
    if shape == "long" and (not columns or columns[0] != "date"):
        raise TemplateError(f"{where}: a long trend table's columns start with 'date'")
    groups = ("site",) if shape == "long" else ()
    return HistorySpec(title=_compile(raw["title"], f"{where}.title", groups), shape=shape, columns=columns)


def _side_words(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A list of vocabulary side words (["Left", "左侧"]) or a table of the layout's own
    ({ "sin." = "left" })."""
    pairs = [(str(k), str(v)) for k, v in raw.items()] if isinstance(raw, dict) else [(str(w), str(w)) for w in raw]
    resolved = [(word, canonical_side(side)) for word, side in pairs]
    unknown = [word for word, side in resolved if side is None]
    if unknown:
        raise TemplateError(f"{where}: {unknown} are not sides in ingest.vocabulary")
    return tuple(sorted(((w, s) for w, s in resolved if s), key=lambda p: len(p[0]), reverse=True))


def template_from_mapping(raw: Mapping[str, Any], source_file: str = "<memory>") -> Template:
    """Build a template from a parsed TOML mapping (tests build small ones in memory)."""
    where = source_file
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise TemplateError(f"{where}: unknown key(s) {sorted(unknown)}")
    try:
        date_order = raw["date_order"]
        if date_order not in ("DMY", "MDY", "YMD", "locale"):
            raise TemplateError(f"{where}: date_order must be DMY, MDY, YMD or locale")
        text_source = raw.get("text_source", "pdfium")
        if text_source not in ("pdfium", "pdfplumber"):
            raise TemplateError(f"{where}: text_source must be 'pdfium' or 'pdfplumber'")
        fields_raw: Mapping[str, str] = raw["fields"]
        bad_fields = set(fields_raw) - _FIELD_NAMES
        if bad_fields:
            raise TemplateError(f"{where}: unknown field(s) {sorted(bad_fields)}")
        for required in ("patient_id", "exam_date"):
            if required not in fields_raw:
                raise TemplateError(f"{where}: fields.{required} is required")
        fields = {
            k: _compile(
                v.replace(DATE_PLACEHOLDER, DATE_SPELLINGS), f"{where}.fields.{k}", _FIELD_GROUPS.get(k, ("v",))
            )
            for k, v in fields_raw.items()
        }
        name_pattern = fields.get("name")
        if name_pattern is not None and not (
            "v" in name_pattern.groupindex or {"family", "given"} <= set(name_pattern.groupindex)
        ):
            raise TemplateError(f"{where}.fields.name: needs (?P<v>) or (?P<family>) and (?P<given>)")
        metadata_fields = {
            k: _compile(v, f"{where}.metadata_fields.{k}", ("v",)) for k, v in raw.get("metadata_fields", {}).items()
        }
        device_raw = raw["device"]
        device = DeviceSpec(
            manufacturer=str(device_raw["manufacturer"]),
            lines=tuple(_compile(p, f"{where}.device.lines", ("model",)) for p in device_raw["lines"]),
        )
        sides_raw = raw.get("sides", {})
        side_words = _side_words(sides_raw.get("words", ()), f"{where}.sides.words")
        side_context = tuple(_compile(p, f"{where}.sides.context", ("side",)) for p in sides_raw.get("context", ()))
        labels = {_fold(k): str(v) for k, v in raw.get("labels", {}).items()}
        detect_all = tuple(_compile(p, f"{where}.detect.all") for p in raw["detect"]["all"])
        if not detect_all:
            raise TemplateError(f"{where}: detect.all needs at least one marker")
        lsc = tuple(_compile(p, f"{where}.lsc", ("v",)) for p in raw.get("lsc", {}).get("patterns", ()))
        history = tuple(_history(h, f"{where}.history[{i}]") for i, h in enumerate(raw.get("history", ())))
        return Template(
            name=str(raw["name"]),
            description=str(raw.get("description", raw["name"])),
            source_file=source_file,
            date_order=date_order,
            text_source=text_source,
            detect_all=detect_all,
            fields=fields,
            metadata_fields=metadata_fields,
            device=device,
            side_words=side_words,
            side_context=side_context,
            labels=labels,
            table=_table(raw["table"], f"{where}.table"),
            lsc=lsc,
            history=history,
            date_pattern=_compile(
                "^\\s*(?P<date>" + raw.get("date_pattern", DEFAULT_DATE_PATTERN) + ")",
                f"{where}.date_pattern",
            ),
        )
    except KeyError as exc:
        raise TemplateError(f"{where}: missing key {exc}") from exc


def load_template(path: Path) -> Template:
    with path.open("rb") as fh:
        return template_from_mapping(tomllib.load(fh), path.name)


@cache
def builtin_templates() -> tuple[Template, ...]:
    """Every `templates/*.toml`, in file-name order (detection tries them in this order)."""
    return tuple(load_template(p) for p in sorted(TEMPLATE_DIR.glob("*.toml")))
