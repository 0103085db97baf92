"""The docs/architecture.md, "Vocabulary" vocabulary, and the small readers every parser shares.

Vendors write the same site a dozen ways ("Neck", "Femoral Neck", "股骨颈", "Radius 33%",
"1/3"). Parsers translate labels here and nowhere else, so that a new synonym is one line
in one table, and a site can never land on the wrong name in one parser but not another.
"""

from __future__ import annotations

import math
import re
import unicodedata

from ingest.errors import MalformedResults

# The skeletal sites by region: one definition the parsers (DICOM, PDF, OCR) share.
HIP_SITES = frozenset({"femoral_neck", "total_hip", "trochanter", "intertrochanter", "wards"})
FOREARM_SITES = frozenset({"radius_33", "radius_ud", "radius_total"})
SIDED_SITES = HIP_SITES | FOREARM_SITES  # a hip or forearm value needs its side
SITES_FIXED = SIDED_SITES | {"total_body"}
SIDES = frozenset({"left", "right", "mean"})
MONITORED_SITES = frozenset({"femoral_neck", "total_hip", "radius_33"})  # plus the analysed spine range

_SITE_SYNONYMS: dict[str, str] = {
    # femur
    "neck": "femoral_neck",
    "femoral neck": "femoral_neck",
    "femur neck": "femoral_neck",
    "fem neck": "femoral_neck",
    "neck of femur": "femoral_neck",
    "femoral neck region": "femoral_neck",
    "fn": "femoral_neck",
    "股骨颈": "femoral_neck",
    "total": "total_hip",  # only meaningful inside a hip context; callers pass context-free labels
    "total hip": "total_hip",
    "total femur": "total_hip",
    "hip total": "total_hip",
    "femur total": "total_hip",
    "total proximal femur": "total_hip",
    "proximal femur": "total_hip",
    "total femoral": "total_hip",
    "total hip region": "total_hip",
    "全髋": "total_hip",
    "全髋部": "total_hip",
    "髋部总计": "total_hip",
    "troch": "trochanter",
    "trochanter": "trochanter",
    "greater trochanter": "trochanter",
    "trochanteric": "trochanter",
    "trochanteric region": "trochanter",
    "大转子": "trochanter",
    "转子": "trochanter",
    "inter": "intertrochanter",
    "intertrochanter": "intertrochanter",
    "intertroch": "intertrochanter",
    "int": "intertrochanter",
    "intertrochanteric": "intertrochanter",
    "intertrochanteric region": "intertrochanter",
    "转子间": "intertrochanter",
    "wards": "wards",
    "ward's": "wards",
    "ward": "wards",
    "wards triangle": "wards",
    "ward's triangle": "wards",
    "ward triangle": "wards",
    "wards区": "wards",
    "ward三角": "wards",
    # forearm
    "1/3": "radius_33",
    "radius 1/3": "radius_33",
    "radius 33%": "radius_33",
    "33%": "radius_33",
    "radius33": "radius_33",
    "radius 33": "radius_33",
    "1/3 radius": "radius_33",
    "33% radius": "radius_33",
    "radius 33 %": "radius_33",
    "one-third radius": "radius_33",
    "one third radius": "radius_33",
    "radius one-third": "radius_33",
    "distal 1/3": "radius_33",
    "1/3 distal": "radius_33",
    "radius 1/3 distal": "radius_33",
    "distal 1/3 radius": "radius_33",
    "桡骨1/3": "radius_33",
    "ud": "radius_ud",
    "radius ud": "radius_ud",
    "ultradistal": "radius_ud",
    "radius ultradistal": "radius_ud",
    "ultra-distal": "radius_ud",
    "ultra distal": "radius_ud",
    "ud radius": "radius_ud",
    "radius ultra-distal": "radius_ud",
    "ultradistal radius": "radius_ud",
    "桡骨远端": "radius_ud",
    "radius total": "radius_total",
    "total radius": "radius_total",
    # whole body
    "total body": "total_body",
    "whole body": "total_body",
    "全身": "total_body",
}

_SIDE_SYNONYMS: dict[str, str] = {
    "left": "left",
    "l": "left",
    "lt": "left",
    "左": "left",
    "左侧": "left",
    "right": "right",
    "r": "right",
    "rt": "right",
    "右": "right",
    "右侧": "right",
    "mean": "mean",
    "dual": "mean",
    "average": "mean",
    "avg": "mean",
    "均值": "mean",
    "平均": "mean",
    "双侧": "mean",
}

_LUMBAR_RANGE = re.compile(r"^l\s*([1-5])\s*(?:[-–—~至到]|to|through|thru)\s*l?\s*([1-5])$")
# Words a printout puts before an AP lumbar range ("AP Spine L1-L4", "Lumbar Spine L2-L4"); never
# "lateral": a lateral spine's L2-L4 is another measurement than the AP one.
_SPINE_PREFIX = re.compile(r"^(?:ap\s+)?(?:lumbar\s+)?(?:spine\s+)?(?=l\s*\d)")
_LUMBAR_SINGLE = re.compile(r"^l\s*([1-5])$")


def _fold(label: str) -> str:
    text = unicodedata.normalize("NFKC", label).strip().lower()
    text = re.sub(r"<[^>]+>", " ", text)  # HTML inside Hologic header cells
    text = text.replace("\u00a0", " ")
    text = re.sub(r"(?<=[a-z])\.", "", text)  # "Troch.", "Int.", "Fem. Neck": abbreviations
    return re.sub(r"\s+", " ", text).strip()


def lumbar_site(label: str) -> str | None:
    """ "L1 - L4", "L1-L4", "l2–l4", "L3" → "L1-L4", "L2-L4", "L3"; a reversed or one-vertebra
    range is not a range. Non-contiguous sets ("L1,L3") are not vocabulary and give None."""
    text = _SPINE_PREFIX.sub("", _fold(label).replace("腰椎", "").strip())
    m = _LUMBAR_RANGE.match(text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo < hi:
            return f"L{lo}-L{hi}"
        return None
    m = _LUMBAR_SINGLE.match(text)
    if m:
        return f"L{m.group(1)}"
    return None


def canonical_site(label: str) -> str | None:
    """Map a vendor's region label to a vocabulary site, or None when it is not one."""
    lumbar = lumbar_site(label)
    if lumbar:
        return lumbar
    text = _fold(label)
    if text in SITES_FIXED:
        return text
    return _SITE_SYNONYMS.get(text)


def canonical_side(label: str | None) -> str | None:
    if label is None:
        return None
    return _SIDE_SYNONYMS.get(_fold(label))


def is_monitoring_site(site: str) -> bool:
    """A contiguous lumbar range, femoral neck, total hip or 1/3 radius; never a single vertebra."""
    return site in MONITORED_SITES or bool(re.fullmatch(r"L[1-5]-L[1-5]", site))


_NUMBER = re.compile(r"[-+−–]?\d+(?:[.,]\d+)?")


def parse_decimal(text: str | None) -> float | None:
    """Read "0,912", "−1.3", " -0.012 " or "1.2%*" as a float; "", "-", "--", "N/A" as None.

    Decimal commas are read as decimal points: DXA values never carry thousands separators
    (BMD < 2 g/cm², mg/cm² < 2000 printed without grouping).
    """
    if text is None:
        return None
    m = _NUMBER.search(unicodedata.normalize("NFKC", text))
    if not m:
        return None
    raw = m.group(0).replace("−", "-").replace("–", "-").replace(",", ".")
    return float(raw)


_BLANK_CELLS = frozenset({"", "-", "--", "---", "n/a", "na", "—"})
_CELL_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_cell(text: str | None, what: str = "value") -> float | None:
    """Read a structured result cell (a DICOM DS, a Hologic table cell, a GE XML value) whole.

    Why not `parse_decimal`: a cell is one value, so "0.6x2", "nan" or a number run together
    with another must not become a plausible 0.6 or vanish; and DS allows exponents ("1e23" is
    1e23, left for the plausibility check to refuse, never 1.0). A blank or dash cell is None
    (nothing printed); anything else that is not one number raises MalformedResults, naming
    the column but never quoting the cell.
    """
    if text is None:
        return None
    raw = unicodedata.normalize("NFKC", text).strip().rstrip("%*").strip()
    if raw.lower() in _BLANK_CELLS:
        return None
    raw = raw.replace("−", "-").replace("–", "-")
    if raw.count(",") == 1 and "." not in raw:
        raw = raw.replace(",", ".")
    if not _CELL_NUMBER.fullmatch(raw):
        raise MalformedResults(f"a {what} cell of the results is not a number; re-export the scan")
    value = float(raw)
    if not math.isfinite(value):
        raise MalformedResults(f"a {what} cell of the results is not a finite number; re-export the scan")
    return value


def bmd_to_g_cm2(value: float, unit: str | None) -> float:
    """Convert a BMD to g/cm² from the unit the file states (g/cm², mg/cm², kg/m²)."""
    u = (unit or "g/cm2").strip().lower().replace("²", "2").replace(" ", "").replace("^", "")
    if u in ("mg/cm2", "mg/cm-2", "mgcm-2", "mg.cm-2"):
        return round(value / 1000.0, 6)
    if u in ("kg/m2",):
        return round(value / 10.0, 6)
    return value


# Row labels vendors print beside the sites that are not vocabulary sites: differences between
# sides, ulna and radius+ulna regions, the femoral shaft, the radius mid-region, non-contiguous
# vertebra sets, standardised BMD, total-body sub-regions, precision and calibration lines.
_NOT_SITES = re.compile(
    r"(?:^|\s|\|)diff(?:erence)?\b|\|diff|\bshaft\b|\bmid\b|\bulna\b|\bboth\b|\bsbmd\b|\bhead\b|\barms?\b|\blegs?\b"
    r"|\btrunk\b|\bribs?\b|\bpelvis\b|^(?:[lt][- ]?|thoracic |lumbar )?spine$|\bl[1-5]\s*,|,\s*l[1-5]\b"
    r"|\bsub-?total\b|\bcv\b|\bacf\b|\bbcf\b|\blsc\b|precision|差值|尺骨|头部|躯干|肋骨|骨盆",
)
# Words of a vocabulary site: a label holding one that no synonym places may be a site spelled in a
# way we do not know yet, and dropping its row would store fewer sites than the report prints.
_SITE_WORDS = re.compile(
    r"neck|troch|inter|ward|hip|femu?r|radius|radial|forearm|distal|1/3|33\s*%|\bud\b|lumbar|spine|\bl\s*[1-5]\b"
    r"|vertebra|total|body|颈|髋|转子|腰椎|桡骨|全身",
)


def is_known_non_site(label: str) -> bool:
    """A row label vendors print that is not a vocabulary site ("Neck Diff.", "Ulna 33%", "L1,L3")."""
    return bool(_NOT_SITES.search(_fold(label)))


def looks_like_site(label: str) -> bool:
    """A row label naming a site word that no synonym places ("Trochanteric Area"): refused rather
    than dropped, since it may be a site the report prints."""
    text = _fold(label)
    return bool(_SITE_WORDS.search(text)) and canonical_site(text) is None and not is_known_non_site(text)
