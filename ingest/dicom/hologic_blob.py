"""Hologic APEX results block: where it sits in a dataset and how its text is read.

The block is the value of private element (0019,xx00) of creator HOLOGIC. It is not XML: a
`<HologicHeader1>` pseudo-XML header, then `<JavaScriptFile …>` sections of `Name = "value";`
lines, which `parse_blob` reads into scalars and indexed cells.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from ingest.dicom import header as h

CREATOR = "HOLOGIC"
_GROUP = 0x0019


def find_results_element(ds: Dataset) -> bytes | str | None:
    """The (0019,xx00) value of the first block reserved by private creator HOLOGIC, if any.

    The block number is whatever (0019,00xx) holds 'HOLOGIC'; it is usually 0x10 but a
    re-exported file may move it, so (0019,1000) is never assumed.
    """
    found = find_results_elements(ds)
    return found[0] if found else None


def find_results_elements(ds: Dataset) -> list[bytes | str]:
    """Every HOLOGIC block's results, in block order, each once: an object merged by a router or
    re-exported with two analyses carries one block per scan, and reading the first alone would
    drop the others without a word."""
    creators = [int(e.tag) for e in ds.elements() if e.tag >> 8 == (_GROUP << 8) and e.tag & 0xFF >= 0x10]
    found: list[bytes | str] = []
    for tag in creators:
        name = h.text(ds, tag)
        if name and name.upper().startswith(CREATOR):
            elem = ds.get((_GROUP << 16) | ((tag & 0xFF) << 8))
            if elem is not None and isinstance(elem.value, (bytes, str)) and elem.value and elem.value not in found:
                found.append(elem.value)
    return found


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
