"""GE Lunar enCORE Enhanced SR: `DXA Report` › scan container › region › BMD / T / Z.

Concept codes differ between enCORE versions, so nodes are recognised by their code meaning,
case-insensitively. The tree is walked by tag on plain nodes split from the raw ContentSequence bytes (see
`rawsr`): converting every nested item into a pydicom Dataset costs thirty times or more
what reading the file does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from ingest.dates import parse_date
from ingest.dicom import header as h
from ingest.dicom.dates import resolve_order, separator_default
from ingest.dicom.rawsr import Node, node_from_dataset, parse_sequence
from ingest.dicom.sites import Region, refuse_unplaced, region_and_side, site_in, split_side
from ingest.errors import MissingField, NotDxaResult, UnsupportedLayout
from ingest.report import ParsedReport, SiteMeasurement, VendorExtras, VendorHistoryRow
from ingest.vocabulary import bmd_to_g_cm2, parse_cell, parse_decimal

FORMAT = "ge_enhanced_sr"

CONTENT_SEQ = 0x0040A730
CONCEPT_NAME = 0x0040A043
MEASURED_VALUES = 0x0040A300
NUMERIC_VALUE = 0x0040A30A
UNITS_CODE = 0x004008EA
CODE_VALUE = 0x00080100
CODE_MEANING = 0x00080104
TEXT_VALUE = 0x0040A160
_TS_IMPLICIT_LE = "1.2.840.10008.1.2"
_TS_LITTLE_ENDIAN = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"})

_NON_ALPHA = re.compile(r"[^a-z]")

Decode = Callable[[bytes], str]


def _codec(ds: Dataset) -> Decode:
    """One decoder for the whole tree, from the file's Specific Character Set."""
    encodings = convert_encodings(ds.get((0x0008, 0x0005)).value if (0x0008, 0x0005) in ds else None)
    if len(encodings) == 1:
        codec = encodings[0]
        return lambda b: b.decode(codec, "replace")
    return lambda b: decode_bytes(b, encodings, set())


def content_tree(ds: Dataset) -> tuple[list[Node], Decode]:
    """The content tree as plain nodes; bytes split by `rawsr` when the encoding allows."""
    ts = str(ds.file_meta.get("TransferSyntaxUID", _TS_IMPLICIT_LE))
    raw = ds.get_item(CONTENT_SEQ)
    if raw is None:
        return [], _codec(ds)
    if isinstance(raw, RawDataElement) and ts in _TS_LITTLE_ENDIAN and isinstance(raw.value, bytes):
        return parse_sequence(raw.value, raw.is_implicit_VR), _codec(ds)
    seq = ds[CONTENT_SEQ].value
    return [node_from_dataset(item) for item in seq], _utf8


def _utf8(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def node_text(node: Node, tag: int, dec: Decode) -> str | None:
    v = node.get(tag)
    if not isinstance(v, bytes):
        return None
    s = dec(v).strip(" \x00")
    return s or None


def _seq(node: Node, tag: int) -> list[Node]:
    v = node.get(tag)
    return v if isinstance(v, list) else []


def meaning(node: Node, dec: Decode) -> str:
    """A content item's concept name as printed (empty when it has none)."""
    names = _seq(node, CONCEPT_NAME)
    return (node_text(names[0], CODE_MEANING, dec) or "") if names else ""


def children(node: Node) -> list[Node]:
    return _seq(node, CONTENT_SEQ)


def _num(node: Node, dec: Decode) -> tuple[float | None, str | None]:
    """(value, unit code) of a NUM item; TEXT items carrying a number are read the same way."""
    mv = _seq(node, MEASURED_VALUES)
    if mv:
        first = mv[0]
        units = _seq(first, UNITS_CODE)
        unit = (node_text(units[0], CODE_VALUE, dec) or node_text(units[0], CODE_MEANING, dec)) if units else None
        return parse_cell(node_text(first, NUMERIC_VALUE, dec)), unit
    return parse_decimal(node_text(node, TEXT_VALUE, dec)), None


def _key(meaning: str) -> str:
    return _NON_ALPHA.sub("", meaning.lower())


@dataclass
class _Values:
    bmd: float | None = None
    unit: str | None = None
    t: float | None = None
    z: float | None = None
    bmc: float | None = None
    area: float | None = None


def _region_values(container: Node, dec: Decode) -> _Values:
    v = _Values()
    for leaf in children(container):
        key = _key(meaning(leaf, dec))
        if key == "bmd":
            v.bmd, v.unit = _num(leaf, dec)
        elif key.endswith("tscore"):
            v.t = _num(leaf, dec)[0]
        elif key.endswith("zscore"):
            v.z = _num(leaf, dec)[0]
        elif key == "bmc":
            v.bmc = _num(leaf, dec)[0]
        elif key == "area":
            v.area = _num(leaf, dec)[0]
    return v


@dataclass
class _TrendRow:
    site: str
    side: str | None
    raw_date: str
    bmd: float | None
    change_prev: float | None
    pchange_prev: float | None
    change_base: float | None
    pchange_base: float | None
    path: str


def _trend_rows(container: Node, site: str, side: str | None, path: str, dec: Decode) -> list[_TrendRow]:
    rows: list[_TrendRow] = []
    for dnode in children(container):
        raw_date = meaning(dnode, dec)
        values: dict[str, float | None] = {}
        bmd: float | None = None
        for leaf in children(dnode):
            key = _key(meaning(leaf, dec))
            if key == "bmd":
                val, unit = _num(leaf, dec)
                bmd = bmd_to_g_cm2(val, unit) if val is not None else None
            elif key in ("changevsprevious", "pchangevsprevious", "changevsbaseline", "pchangevsbaseline"):
                for sub in children(leaf):
                    if _key(meaning(sub, dec)) == "bmd":
                        val, unit = _num(sub, dec)
                        if val is not None and key[0] != "p":
                            val = bmd_to_g_cm2(val, unit)
                        values[key] = val
        rows.append(
            _TrendRow(
                site=site,
                side=side,
                raw_date=raw_date,
                bmd=bmd,
                change_prev=values.get("changevsprevious"),
                pchange_prev=values.get("pchangevsprevious"),
                change_base=values.get("changevsbaseline"),
                pchange_base=values.get("pchangevsbaseline"),
                path=f"{path}/{raw_date}",
            )
        )
    return rows


def _label_site(label: str, region: Region, side: str | None) -> tuple[str | None, str | None]:
    if region == "dual_hip":
        base, row_side, _ = split_side(label)
        return site_in(base, region), row_side
    site = site_in(label, region)
    if site is None:
        base, row_side, had = split_side(label)
        if had and row_side:
            return site_in(base, region), row_side
    return site, side


def parse_ge_sr(ds: Dataset, name: str) -> ParsedReport:
    tree, dec = content_tree(ds)
    return parse_ge_sr_tree(ds, tree, dec)


def root_name_of(ds: Dataset) -> str:
    root_names = ds.get(CONCEPT_NAME)
    root_name = "DXA Report"
    if root_names is not None and root_names.value:
        root_name = str(root_names.value[0].get(CODE_MEANING).value or root_name).strip()
    return root_name


def parse_ge_sr_tree(ds: Dataset, tree: list[Node], dec: Decode, path: str | None = None) -> ParsedReport:
    """One DXA document: `tree` holds its scan containers, `ds` its identity (the file's header, or
    one built for a document nested in the file, `ingest.dicom.sr_documents`)."""
    root_name = path or root_name_of(ds)
    measurements: list[SiteMeasurement] = []
    trends: list[_TrendRow] = []
    regions: list[Region] = []
    recognised: list[str] = []
    for group in tree:
        gname = meaning(group, dec)
        region, gside = region_and_side(gname)
        if region is None:
            continue
        recognised.append(gname)
        if region in ("hip", "forearm") and gside is None:
            if any(_region_values(child, dec).bmd is not None for child in children(group)):
                # Skipping it would drop its sites without a word when other scans are stored.
                raise MissingField(f"side of the {region} (left or right): a GE structured report scan names none")
            continue  # no values: reported below if nothing else is
        regions.append(region)
        for child in children(group):
            cname = meaning(child, dec)
            path = f"{root_name}/{gname}/{cname}"
            if cname.lower().startswith("trend"):
                site, side = _label_site(cname[5:].strip(), region, gside)
                if site:
                    trends.extend(_trend_rows(child, site, side, path, dec))
                continue
            site, side = _label_site(cname, region, gside)
            v = _region_values(child, dec)
            if v.bmd is None:
                continue
            if site is None:
                refuse_unplaced(cname, region, "GE structured report")
            if site is None or (side is None and region not in ("spine", "total_body")):
                continue
            measurements.append(
                SiteMeasurement(
                    site=site,
                    side=side,
                    bmd=bmd_to_g_cm2(v.bmd, v.unit),
                    t_score=v.t,
                    z_score=v.z,
                    bmc_g=v.bmc,
                    area_cm2=v.area,
                    provenance=f"{path}/BMD",
                )
            )
    if not measurements:
        if recognised:
            raise UnsupportedLayout(
                "GE structured report: recognised " + ", ".join(recognised[:5]) + " but found no BMD in them"
            )
        raise NotDxaResult("no results: this structured report holds no DXA scan containers with BMD")
    exam = h.exam_date(ds)
    raws = [t.raw_date for t in trends]
    order = resolve_order(raws, exam, separator_default(raws))
    history = tuple(_history(trends, order))
    return ParsedReport(
        format=FORMAT,
        patient=h.patient(ds),
        exam_date=exam,
        device=h.device(ds, serial_from_model=False),
        scan_type=_scan_type(regions),
        measurements=tuple(measurements),
        extras=VendorExtras(history=history),
        **h.uids(ds),
    )


def _history(trends: list[_TrendRow], order: str) -> list[VendorHistoryRow]:
    out: list[VendorHistoryRow] = []
    for t in trends:
        d: date | None = parse_date(t.raw_date, "DMY" if order == "DMY" else "MDY")
        if d is None:
            continue
        out.append(
            VendorHistoryRow(
                site=t.site,
                side=t.side,
                date=d,
                bmd=t.bmd,
                change_vs_baseline_pct=t.pchange_base,
                change_vs_previous_pct=t.pchange_prev,
                change_vs_baseline_g_cm2=t.change_base,
                change_vs_previous_g_cm2=t.change_prev,
                provenance=t.path,
            )
        )
    return out


def _scan_type(regions: list[Region]) -> str:
    kinds = set(regions)
    if len(kinds) == 1:
        return next(iter(kinds))
    return "mixed"
