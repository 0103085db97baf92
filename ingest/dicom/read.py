"""Reading untrusted DICOM bytes: never pixels, never a partial dataset, `force=True` only for a
raw dataset whose first element is a plausible group 0008 element and that proves itself a
DICOM instance once read (SOP Class and Instance UIDs, every element inside the bytes).

pydicom is lenient by design: a file cut inside an element header simply ends the dataset,
and a sequence whose declared length runs past the end of the file is read short. Either way
part of the results tree would silently be missing, so after reading we check that every
top-level element fits inside the bytes we were given and that nothing is left over except
pixel data (which `stop_before_pixels` leaves unread on purpose).
"""

from __future__ import annotations

import re
import struct
import warnings
from io import BytesIO
from typing import Literal

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileDataset
from pydicom.errors import InvalidDicomError

from ingest.errors import NotDicom, TooComplex, UnreadableFile

_PREAMBLE_LEN = 128
_MAGIC = b"DICM"
_UNDEFINED = 0xFFFFFFFF
# Pixel-data-like elements dcmread stops before: (7FE0,0008/0009/0010) in either byte order.
_PIXEL_TAG_PREFIXES = (
    b"\xe0\x7f\x10\x00",
    b"\xe0\x7f\x08\x00",
    b"\xe0\x7f\x09\x00",
    b"\x7f\xe0\x00\x10",
    b"\x7f\xe0\x00\x08",
    b"\x7f\xe0\x00\x09",
)
# A Part 10 file without its 128-byte preamble starts with the File Meta group (0002,xxxx) in
# explicit VR little endian: (0002,0000) UL or (0002,0001) OB.
_META_STARTS = (b"\x02\x00\x00\x00UL\x04\x00", b"\x02\x00\x01\x00OB\x00\x00")

# Exceptions pydicom (or struct/io underneath it) raises on damaged bytes.
DICOM_READ_ERRORS: tuple[type[BaseException], ...] = (EOFError, struct.error, OSError, ValueError)


def looks_like_raw_dataset(data: bytes) -> bool:
    """A dataset stored without preamble and File Meta (as some archives keep what they received):
    it starts with a group 0008 element, little endian ((0008,0005) or (0008,0016) …), either an
    explicit VR (two upper-case letters) or an implicit VR length that fits in the file."""
    if len(data) < 16 or data[0:2] != b"\x08\x00" or data[3] != 0:
        return False
    vr = data[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    return int.from_bytes(data[4:8], "little") < len(data)


def has_preamble(data: bytes) -> bool:
    return len(data) >= _PREAMBLE_LEN + 4 and data[_PREAMBLE_LEN : _PREAMBLE_LEN + 4] == _MAGIC


def looks_like_dicom(data: bytes) -> bool:
    """Preamble + DICM, a Part 10 file that lost its preamble (starts with File Meta), or a raw
    dataset without either."""
    return has_preamble(data) or data.startswith(_META_STARTS) or looks_like_raw_dataset(data)


def read_dicom(data: bytes) -> FileDataset:
    """Parse the header (everything before pixel data) of a complete DICOM Part 10 file.

    A file without preamble but starting with a File Meta group is given a blank preamble so
    that pydicom reads it in strict mode: its structure is still checked, nothing is forced.
    Warnings are silenced because pydicom quotes element values (names, IDs) in them.
    """
    if not has_preamble(data):
        if looks_like_raw_dataset(data) and not data.startswith(_META_STARTS):
            return read_raw_dataset(data)
        if not data.startswith(_META_STARTS):
            raise NotDicom("not a DICOM file or PDF: unrecognised format")
        data = bytes(_PREAMBLE_LEN) + _MAGIC + data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(BytesIO(data), stop_before_pixels=True)
        except InvalidDicomError:
            raise NotDicom("not a valid DICOM file: the DICOM header cannot be read") from None
        except DICOM_READ_ERRORS:
            raise UnreadableFile(
                "DICOM file is truncated or corrupt: its header cannot be read completely; "
                "send the file again from the scanner"
            ) from None
    check_complete(ds, data)
    return ds


def read_raw_dataset(data: bytes) -> FileDataset:
    """A raw dataset (no preamble, no File Meta): pydicom guesses implicit or explicit VR little
    endian from the first element (`force=True`); the result must then name its SOP Class and
    Instance and account for every byte, or it is not taken for a DICOM instance."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(BytesIO(data), stop_before_pixels=True, force=True)
        except DICOM_READ_ERRORS:
            raise UnreadableFile(
                "DICOM dataset (stored without its file header) is truncated or corrupt; "
                "send the file again from the scanner"
            ) from None
        try:
            ok = bool(ds.get("SOPClassUID")) and bool(ds.get("SOPInstanceUID"))
        except DICOM_READ_ERRORS:
            ok = False
    if not ok:
        raise NotDicom("not a DICOM file: a raw dataset without SOP Class and Instance UIDs")
    check_complete(ds, data)
    return ds


def check_complete(ds: FileDataset, data: bytes) -> None:
    """Raise UnreadableFile when the dataset does not account for the file's bytes: only pixel
    data (left unread on purpose), padding, or another DICOM file (`read_dicom_parts`) may follow
    the last element read."""
    if ds.file_meta.get("TransferSyntaxUID") == "1.2.840.10008.1.2.1.99":
        return  # deflated: offsets refer to the inflated stream; zlib checks its own stream
    end, after_pixels = _read_end(ds, data)
    tail = data[end:]
    if tail and not after_pixels and tail.strip(b"\0") and not starts_dicom_file(tail):
        raise _truncated()


def starts_dicom_file(data: bytes) -> bool:
    """A Part 10 file starts here: preamble and DICM, or its File Meta group without preamble."""
    return has_preamble(data) or data.startswith(_META_STARTS)


def read_dicom_parts(data: bytes, *, max_parts: int = 64) -> list[FileDataset]:
    """Every dataset of a file that holds several Part 10 files one after the other (a merge by a
    router or an archive export, `cat a.dcm b.dcm`). Reading only the first would lose the others
    without a word, or read the next file's bytes as elements of the first. A file is cut where
    another Part 10 file starts (a 128-byte preamble, then DICM and its File Meta group) and only
    when the bytes before the cut read as one complete dataset; a cut that falls inside a value is
    no cut."""
    cuts = [m.start() - _PREAMBLE_LEN for m in _NEXT_FILE.finditer(data, _PREAMBLE_LEN + 1)]
    if not cuts:
        return [read_dicom(data)]
    if len(cuts) >= max_parts:
        raise TooComplex(f"this file holds more than {max_parts} DICOM files one after the other")
    parts: list[FileDataset] = []
    start = 0
    for cut in cuts:
        if cut <= start:
            continue
        try:
            ds = read_dicom(data[start:cut])
        except (UnreadableFile, NotDicom):
            continue  # the bytes before this cut are not a whole dataset: DICM inside a value
        parts.append(ds)
        start = cut
    parts.append(read_dicom(data[start:]))
    return parts


# DICM followed by the first File Meta element, (0002,0000) UL or (0002,0001) OB, explicit VR LE.
_NEXT_FILE = re.compile(rb"DICM\x02\x00\x00\x00UL|DICM\x02\x00\x01\x00OB")


def _read_end(ds: FileDataset, data: bytes) -> tuple[int, bool]:
    """Where the dataset read from `data` ends, pixel data and what may follow it (signatures,
    trailing padding) included; and whether pixel data was skipped to get there. Raises
    UnreadableFile when an element runs past the end of the bytes."""
    size = len(data)
    end = 0
    for raw in ds.elements():  # raw elements: nothing is converted
        if not isinstance(raw, RawDataElement) or raw.value_tell is None:
            continue
        if raw.length == _UNDEFINED:
            # pydicom found the delimiter (or raised); the value excludes the 8-byte delimiter
            stop = raw.value_tell + len(raw.value or b"") + 8
        else:
            stop = raw.value_tell + raw.length
        end = max(end, stop)
    if end > size:
        raise _truncated()
    if end == 0:
        return size, False
    after_pixels = False
    while end < size and data[end : end + 4] in _TRAILING_TAGS:
        after_pixels = after_pixels or data[end : end + 4] in _PIXEL_TAG_PREFIXES
        try:
            end = _skip_element(data, end, explicit=not ds.is_implicit_VR, little=ds.is_little_endian is not False)
        except UnreadableFile:
            if not after_pixels:
                raise
            return size, True  # pixels cut short: no result is lost, the header was read whole
    return end, after_pixels


# Elements that may follow the last element pydicom read: pixel data, then (FFFA,FFFA) digital
# signatures and (FFFC,FFFC) trailing padding, in either byte order.
_TRAILING_TAGS = frozenset(_PIXEL_TAG_PREFIXES) | {
    b"\xfa\xff\xfa\xff",
    b"\xfc\xff\xfc\xff",
    b"\xff\xfa\xff\xfa",
    b"\xff\xfc\xff\xfc",
}


def _skip_element(data: bytes, pos: int, *, explicit: bool, little: bool) -> int:
    """The offset after one element at `pos` (an undefined length walks its items to the sequence
    delimiter). Raises UnreadableFile when it runs past the end."""
    order: Literal["little", "big"] = "little" if little else "big"
    if explicit:
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UN", b"UT", b"UC", b"UR", b"SV", b"UV"):
            length, head = int.from_bytes(data[pos + 8 : pos + 12], order), 12
        else:
            length, head = int.from_bytes(data[pos + 6 : pos + 8], order), 8
    else:
        length, head = int.from_bytes(data[pos + 4 : pos + 8], order), 8
    pos += head
    if length != _UNDEFINED:
        if pos + length > len(data):
            raise _truncated()
        return pos + length
    while pos + 8 <= len(data):  # encapsulated fragments or sequence items, then the delimiter
        tag, item_length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], order)
        pos += 8
        if tag in (b"\xfe\xff\xdd\xe0", b"\xff\xfe\xe0\xdd"):
            return pos
        if item_length == _UNDEFINED:
            raise _truncated()  # nested undefined items after pixel data: not a layout we accept
        pos += item_length
    raise _truncated()


def _truncated() -> UnreadableFile:
    return UnreadableFile(
        "DICOM file is truncated: it ends before its last element is complete, so part of the "
        "results would be missing; send the file again from the scanner"
    )
