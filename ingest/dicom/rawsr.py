"""A minimal reader for the bytes of an SR content tree.

pydicom builds a full Dataset for every sequence item and converts each element on access;
for an SR of a few hundred items that is 30-100× the cost of reading the file. The content
tree only needs a handful of elements, so its bytes (the raw value pydicom kept for the
top-level ContentSequence) are split here into plain dicts `{tag: bytes | [items]}`.

Little endian (explicit and implicit VR) only; any other encoding goes through pydicom's own
objects (`node_from_dataset`), which is slower but equivalent. Damaged bytes raise
UnreadableFile: an SR with a broken tree is not accepted in part.
"""

from __future__ import annotations

import struct
from struct import Struct
from typing import Any

from ingest.errors import UnreadableFile

Node = dict[int, bytes | list["Node"]]

_U16 = Struct("<H")
_U32 = Struct("<I")
_TAG = Struct("<HH")
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
# Sequences of the SR content tree (and code sequences inside it); needed to recognise a
# defined-length sequence in implicit VR, where nothing else says it is one.
SQ_TAGS = frozenset(
    {
        0x0040A730,  # ContentSequence
        0x0040A043,  # ConceptNameCodeSequence
        0x0040A168,  # ConceptCodeSequence
        0x0040A300,  # MeasuredValueSequence
        0x004008EA,  # MeasurementUnitsCodeSequence
        0x0040A301,  # NumericValueQualifierCodeSequence
        0x00081199,  # ReferencedSOPSequence
        0x0040A504,  # ContentTemplateSequence
    }
)


def _damaged() -> UnreadableFile:
    return UnreadableFile(
        "DICOM structured report is corrupt: its content tree does not decode; send the file again from the scanner"
    )


def parse_sequence(buf: bytes, implicit: bool) -> list[Node]:
    """Items of a sequence value (without the sequence's own header)."""
    try:
        items, _ = _items(buf, 0, len(buf), implicit)
    except (IndexError, ValueError, struct.error, RecursionError):
        raise _damaged() from None
    return items


def _items(buf: bytes, pos: int, end: int, implicit: bool) -> tuple[list[Node], int]:
    """Read items from pos up to end (defined length) or up to a sequence delimiter."""
    items: list[Node] = []
    while pos < end:
        group, elem = _TAG.unpack_from(buf, pos)
        tag = (group << 16) | elem
        length = _U32.unpack_from(buf, pos + 4)[0]
        pos += 8
        if tag == _SEQ_END:
            return items, pos
        if tag != _ITEM:
            raise ValueError("expected an item tag")
        if length == _UNDEFINED:
            node, pos = _dataset(buf, pos, len(buf), implicit, until_delimiter=True)
        else:
            if pos + length > end:
                raise ValueError("item runs past its sequence")
            node, _ = _dataset(buf, pos, pos + length, implicit, until_delimiter=False)
            pos += length
        items.append(node)
    if pos != end:
        raise ValueError("sequence length mismatch")
    return items, pos


def _dataset(buf: bytes, pos: int, end: int, implicit: bool, *, until_delimiter: bool) -> tuple[Node, int]:
    node: Node = {}
    while pos < end:
        group, elem = _TAG.unpack_from(buf, pos)
        tag = (group << 16) | elem
        if tag == _ITEM_END:
            return node, pos + 8
        if implicit:
            vr = b""
            length = _U32.unpack_from(buf, pos + 4)[0]
            pos += 8
        else:
            vr = buf[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                length = _U32.unpack_from(buf, pos + 8)[0]
                pos += 12
            else:
                length = _U16.unpack_from(buf, pos + 6)[0]
                pos += 8
        is_sq = vr == b"SQ" or (implicit and (tag in SQ_TAGS or length == _UNDEFINED))
        if vr == b"UN" and length == _UNDEFINED:
            # An undefined-length UN is a sequence encoded in implicit VR (PS3.5 6.2.2).
            value, pos = _items(buf, pos, len(buf), True)
            node[tag] = value
            continue
        if is_sq:
            if length == _UNDEFINED:
                value, pos = _items(buf, pos, len(buf), implicit)
            else:
                if pos + length > end:
                    raise ValueError("sequence runs past its item")
                value, _ = _items(buf, pos, pos + length, implicit)
                pos += length
            node[tag] = value
            continue
        if length == _UNDEFINED or pos + length > end:
            raise ValueError("element runs past its item")
        node[tag] = buf[pos : pos + length]
        pos += length
    if until_delimiter:
        raise ValueError("item delimiter missing")
    return node, pos


def node_from_dataset(ds: Any) -> Node:
    """The same plain structure from pydicom objects (for encodings the raw reader skips)."""
    node: Node = {}
    for elem in ds:
        if elem.VR == "SQ":
            node[int(elem.tag)] = [node_from_dataset(item) for item in elem.value]
        else:
            v = elem.value
            node[int(elem.tag)] = v if isinstance(v, bytes) else str(v).encode("utf-8")
    return node
