"""Builders for synthetic DICOM result files (our own fixtures, beside the shared samples)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dxa.apex_blob import apex_blob

SC = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"


def _base(sop_class: str, manufacturer: str, model: str, serial: str | None) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "2.25.1234"
    ds.StudyDate = "20210320"
    ds.AccessionNumber = "A1"
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "P123"
    ds.PatientBirthDate = "19500101"
    ds.PatientSex = "F"
    if serial:
        ds.DeviceSerialNumber = serial
    ds.StudyInstanceUID = "2.25.5678"
    return ds


def to_bytes(ds: Dataset, *, implicit: bool = False) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


# --- Hologic -----------------------------------------------------------------------------------

SPINE_COLUMNS = [
    (1, "Region"),
    (2, "Area[cm<sup><small>2</small></sup>]"),
    (4, "BMC[(g)]"),
    (3, "BMD[g/cm<sup><small>2</small></sup>]"),
    (5, "T-score"),
    (6, "Z-score"),
]


def hologic_blob(
    rows: list[list[str]],
    columns: list[tuple[int, str]] = SPINE_COLUMNS,
    *,
    scan_mode: str = "f Lumbar Spine",
    protocol: str = "Spine",
    model: str = "Horizon Ci (S/N 301234M)",
    history: list[list[str]] | None = None,
    extra: str = "",
) -> str:
    more_results: list[str] = []
    if history:
        more_results += [
            "IncludeTable2 = true;",
            'TableTitle2  = "Results History: L1-L4";',
            "TableType2 = 2;",
            "TableColumnTypes2[ 0] = 16;",
            'ResultsTable2[ 0][ 0]  = "Scan Date";',
            "TableColumnTypes2[ 1] = 3;",
            'ResultsTable2[ 0][ 1]  = "BMD";',
            "TableColumnTypes2[ 2] = 18;",
            'ResultsTable2[ 0][ 2]  = "BMD Change vs Baseline";',
            "TableColumnTypes2[ 3] = 19;",
            'ResultsTable2[ 0][ 3]  = "BMD Change vs Previous";',
        ]
        for r, row in enumerate(history, start=1):
            for c, cell in enumerate(row):
                more_results.append(f'ResultsTable2[ {r}][ {c}]  = "{cell}";')
    return apex_blob(
        rows,
        columns,
        scan_id="A1",
        scan="March 20, 2021 - A0320210D",
        scan_mode=scan_mode,
        protocol=protocol,
        model=model,
        more_results=more_results,
        more_files=['<JavaScriptFile, filetype=7, filename="x">', extra, "</JavaScriptFile>"] if extra else [],
    )


SPINE_ROWS = [
    ["L1", "12.56", "7.87", "0.626", "-2.9", "-1.9"],
    ["L2", "13.69", "9.20", "0.672", "-3.3", "-2.3"],
    ["L3", "14.99", "10.68", "0.713", "-3.4", "-2.4"],
    ["L4", "16.92", "11.94", "0.705", "-3.5", "-2.5"],
    ["Total", "58.17", "39.69", "0.682", "-3.3", "-2.3"],
]


def hologic_file(
    blob: str | None,
    *,
    block: int = 0x10,
    vr: str = "UN",
    encoding: str = "utf-8",
    serial: str | None = "301234M",
    implicit: bool = False,
) -> bytes:
    ds = _base(SC, "HOLOGIC", "Horizon Ci (S/N 301234M)", serial)
    ds.Modality = "BD"
    if blob is not None:
        ds.add_new((0x0019, block), "LO", "HOLOGIC")
        tag = (0x0019, (block << 8) | 0x00)
        if vr == "LT":
            ds.add_new(tag, "LT", blob)
        else:
            ds.add_new(tag, "UN", blob.encode(encoding))
    return to_bytes(ds, implicit=implicit)


# --- GE Enhanced SR ------------------------------------------------------------------------------


def _code(meaning: str, value: str = "X-1") -> Sequence:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "99GEMS"
    item.CodeMeaning = meaning
    return Sequence([item])


def container(meaning: str, children: list[Dataset]) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "CONTAINER"
    item.ConceptNameCodeSequence = _code(meaning)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(children)
    return item


def num(meaning: str, value: str, unit: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "NUM"
    item.ConceptNameCodeSequence = _code(meaning)
    mv = Dataset()
    mv.NumericValue = value
    mv.MeasurementUnitsCodeSequence = _code(unit, unit)
    item.MeasuredValueSequence = Sequence([mv])
    return item


def text(meaning: str, value: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = _code(meaning)
    item.TextValue = value
    return item


def region(label: str, bmd: str, unit: str = "g/cm2", t: str = "-1.0", z: str = "0.0", **kw: Any) -> Dataset:
    names = kw.get("names", ("BMD", "BMD_TSCORE", "BMD_ZSCORE"))
    return container(label, [num(names[0], bmd, unit), text(names[1], t), text(names[2], z)])


def sr_file(groups: list[Dataset], *, serial: str | None = "ME+212290", implicit: bool = False) -> bytes:
    ds = _base(ENHANCED_SR, "GE Healthcare", "Lunar iDXA", serial)
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = _code("DXA Report")
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = Sequence(groups)
    return to_bytes(ds, implicit=implicit)


def image_with_comments(comments: str | None, manufacturer: str = "GE Healthcare") -> bytes:
    ds = _base(SC, manufacturer, "Lunar Prodigy", "DF+500475")
    ds.Modality = "BMD"
    if comments is not None:
        ds.ImageComments = comments
    return to_bytes(ds)
