"""The shared DICOM samples as routers and archives leave them: re-encoded (implicit VR, deflate),
pixel data OB instead of OW, group lengths added, private elements
dropped or their creator stripped, stored without preamble and File Meta."""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

HOLOGIC_CREATOR = "HOLOGIC"


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def _save(ds: Dataset, syntax: str | None = None) -> bytes:
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def implicit_vr(data: bytes) -> bytes:
    return _save(_read(data), ImplicitVRLittleEndian)


def deflated(data: bytes) -> bytes:
    return _save(_read(data), DeflatedExplicitVRLittleEndian)


def pixel_data_ob(data: bytes) -> bytes:
    """A JPEG-LS lossless re-route leaves Pixel Data as OB where it was OW (and back); uncompressed
    here, only the VR changes."""
    ds = _read(data)
    if "PixelData" in ds:  # OW <-> OB: the same pixels under the other VR
        ds["PixelData"].VR = "OW" if ds["PixelData"].VR == "OB" else "OB"
    else:
        ds.add(DataElement(0x7FE00010, "OB", b"\0" * 16))
    return _save(ds)


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def group_lengths(data: bytes) -> bytes:
    """A group length element (0008,0000) in front of the dataset, as older toolkits write them
    (pydicom drops them on writing, so it is put in at the byte level of explicit VR little endian)."""
    encoded = _save(_read(data), ExplicitVRLittleEndian)
    meta_length = struct.unpack_from("<I", encoded, 132 + 8)[0]
    start = 132 + 12 + meta_length
    end = start
    while struct.unpack_from("<H", encoded, end)[0] == 0x0008:  # walk group 0008's elements
        vr = encoded[end + 4 : end + 6]
        if vr in _LONG_VRS:
            length, header = struct.unpack_from("<I", encoded, end + 8)[0], 12
        else:
            length, header = struct.unpack_from("<H", encoded, end + 6)[0], 8
        if length == 0xFFFFFFFF:
            raise ValueError("undefined length in group 0008: not handled by this test helper")
        end += header + length
    element = b"\x08\x00\x00\x00UL\x04\x00" + struct.pack("<I", end - start)
    return encoded[:start] + element + encoded[start:]


def private_dropped(data: bytes) -> bytes:
    """Every private element dropped, except the vendor's results block and its creator (a router
    keeping only what it knows a receiver needs)."""
    ds = _read(data)
    keep = {int(e.tag) for e in ds if e.tag.group == 0x0019}
    for elem in list(ds):
        if elem.tag.is_private and int(elem.tag) not in keep:
            del ds[elem.tag]
    return _save(ds)


def creator_stripped(data: bytes) -> bytes:
    """The private creator elements removed, the blocks they reserved left in place."""
    ds = _read(data)
    for elem in list(ds):
        if elem.tag.is_private and elem.tag.element < 0x0100 and elem.tag.element >= 0x10:
            del ds[elem.tag]
    return _save(ds)


def raw_dataset(implicit: bool) -> Callable[[bytes], bytes]:
    """The dataset alone: no 128-byte preamble, no DICM, no File Meta."""

    def build(data: bytes) -> bytes:
        ds = _read(data)
        ds.file_meta = FileMetaDataset()
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = implicit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_dataset(fp, ds)
        return bytes(fp.getvalue())

    return build


REENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "implicit_vr": implicit_vr,
    "deflated": deflated,
    "pixel_data_ob": pixel_data_ob,
    "group_lengths": group_lengths,
    "private_dropped": private_dropped,
    "creator_stripped": creator_stripped,
    "raw_implicit_no_meta": raw_dataset(True),
    "raw_explicit_no_meta": raw_dataset(False),
}
