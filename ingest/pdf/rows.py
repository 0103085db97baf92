"""A results row as printed: its label (a site, a side, or both) and its value cells.

Rows are read as "label, then values": the label is everything before the first number, so
"L2 - L4 0.720 …" and "Neck Left 0.658 …" keep their spaces and dashes. A label becomes a site
(and side) through the template's own labels, then the shared vocabulary, after peeling off a
side word ("Left", "左侧"). Vendors print a placeholder ("-", "*****") for an empty cell, so the
column order holds. Anything doubtful raises: a value on the wrong site or side would silently
corrupt a patient's trend.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ingest.errors import MalformedResults, MissingField
from ingest.pdf.template import Template
from ingest.vocabulary import HIP_SITES, SIDED_SITES, _fold, canonical_site, parse_decimal

NUMBER = re.compile(r"^[-+−–]?\d+(?:[.,]\d+)?[%*#]*$")
PLACEHOLDER = re.compile(r"^(?:[-–—]+|\*+|n/?a|nd|--)$", re.IGNORECASE)
UNIT = re.compile(r"^(?:m?g/cm[²2]?|g/cm\^2|%|%/yr)$", re.IGNORECASE)
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class Label:
    site: str | None  # None: the label names a side only (a row under a group header)
    side: str | None


@dataclass(frozen=True)
class Cell:
    value: float | None
    significant: bool = False  # vendor "*"
    dissimilar: bool = False  # vendor "#"


def value_cell(token: str) -> Cell | None:
    """A value token, or None when the token is not a value (a word or a unit)."""
    if NUMBER.match(token):
        return Cell(parse_decimal(token), "*" in token, "#" in token)
    if PLACEHOLDER.match(token):
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


def split_row(tokens: Sequence[str], template: Template) -> tuple[Label | None, list[str]]:
    """Split a row into its label and value tokens; a label may end in a number-like token
    ("Radius 33%")."""
    first = next((i for i, t in enumerate(tokens) if NUMBER.match(t)), None)
    if first is None:
        return resolve_label(" ".join(tokens), template), []
    found = resolve_label(" ".join(tokens[:first]), template) if first else None
    if found is None and first < len(tokens):
        longer = resolve_label(" ".join(tokens[: first + 1]), template)
        if longer is not None:
            return longer, list(tokens[first + 1 :])
    return found, list(tokens[first:])


def refuse_hidden_row(tokens: Sequence[str], template: Template, page_no: int, index: int) -> None:
    """A line we do not read as a row may still hold one after a value ("Neck Diff. 0.005 - -
    Total Left 0.759 …": two rows run together by a rotated or re-flowed page). Skipping the line
    would drop that site without a word, so the file is refused instead."""
    for i in range(1, len(tokens) - 1):
        if value_cell(tokens[i - 1]) is None or value_cell(tokens[i]) is not None:
            continue
        label, rest = split_row(tokens[i:], template)
        first = value_cell(rest[0]) if rest else None
        if label is not None and label.site and first is not None and first.value is not None:
            raise MalformedResults(
                f"{template.description}: pdf p{page_no} line {index + 1} runs two results rows together "
                "(a rotated or re-flowed page?); the sites cannot be read with certainty"
            )


def row_values(tokens: Iterable[str]) -> list[Cell] | None:
    cells: list[Cell] = []
    for token in tokens:
        if UNIT.match(token):
            continue
        cell = value_cell(token)
        if cell is None:
            return None  # a word among the values: not a result row
        cells.append(cell)
    return cells


def wide_header(line: str, template: Template) -> list[Label]:
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


def need_side(site: str, side: str | None, context_side: str | None, template: Template) -> str | None:
    if site not in SIDED_SITES:
        return None
    side = side or context_side
    if side is None:
        where = "hip" if site in HIP_SITES else "forearm"
        raise MissingField(
            f"side of the {where} (left or right): {template.description} row has no side "
            "and the page does not name one"
        )
    return side
