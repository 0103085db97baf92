"""DICOM files that hold several reports, built from the shared samples: Part 10 files one after
the other, structured reports nesting several documents, and DICOMDIR-like directories whose
records carry the instances. Shared by the tests and the variants table."""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence as Seq
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from tests.unit.ingest.dicom_builders import container, text, to_bytes
from tests.unit.ingest.test_shared_samples import SAMPLES

SR_A = SAMPLES / "single" / "ge_sr" / "idxa_ap_spine_sr.dcm"
SR_B = SAMPLES / "single" / "ge_sr" / "idxa_dualfemur_sr.dcm"
SR_C = SAMPLES / "single" / "ge_sr" / "prodigy_left_femur_mg.dcm"
HOLOGIC = SAMPLES / "single" / "hologic" / "SP_DICOM_1.dcm"
EPDF = SAMPLES / "single" / "encapsulated" / "ge_spine_report_epdf.dcm"

_PATIENT_TAGS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
_STUDY_TAGS = ("StudyDate", "StudyInstanceUID", "AccessionNumber")


def read(path: Path) -> Dataset:
    return pydicom.dcmread(io.BytesIO(path.read_bytes()))


def concatenated(*paths: Path) -> bytes:
    """Part 10 files one after the other, as `cat` or a careless export leaves them."""
    return b"".join(p.read_bytes() for p in paths)


def _date(value: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "HAS OBS CONTEXT"
    item.ValueType = "DATE"
    item.ConceptNameCodeSequence = container("Study Date", []).ConceptNameCodeSequence
    item.Date = value
    return item


def document(sample: Path, *, subject: bool = True, dated: bool = True, device: bool = True) -> Dataset:
    """A sample SR's content as one nested document, with the observation context a merging
    writer records (Subject ID/Name/Birth Date/Sex, study date, Device Observer)."""
    ds = read(sample)
    context: list[Dataset] = []
    if subject:
        context += [text("Subject ID", str(ds.PatientID)), text("Subject Name", str(ds.PatientName))]
        context += [_date_item("Subject Birth Date", str(ds.PatientBirthDate)), text("Subject Sex", str(ds.PatientSex))]
    if dated:
        context.append(_date(str(ds.StudyDate)))
    if device:
        context += [text("Device Observer Manufacturer", str(ds.Manufacturer))]
        context += [text("Device Observer Model Name", str(ds.ManufacturerModelName))]
        if "DeviceSerialNumber" in ds:
            context.append(text("Device Observer Serial Number", str(ds.DeviceSerialNumber)))
    return container("DXA Report", context + list(ds.ContentSequence))


def _date_item(meaning: str, value: str) -> Dataset:
    item = _date(value)
    item.ConceptNameCodeSequence = container(meaning, []).ConceptNameCodeSequence
    return item


def nested_sr(header: Path, documents: Seq[Dataset], *, top_level_of_header: bool = False) -> bytes:
    """One SR with `header`'s header and the documents nested under its root (and, if asked, the
    header sample's own scan containers at the top, as the header's document)."""
    ds = read(header)
    own = list(ds.ContentSequence) if top_level_of_header else []
    ds.ContentSequence = Sequence(own + list(documents))
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    return to_bytes(ds)


def _record(kind: str, source: Dataset | None = None, tags: Seq[str] = (), *, everything: bool = False) -> Dataset:
    record = Dataset()
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = kind
    if source is not None:
        for elem in source:
            if (everything and elem.tag.group not in (0x0002, 0x0004, 0x7FE0)) or elem.keyword in tags:
                record.add(elem)
    return record


def directory(samples: Seq[Path], *, with_patients: bool = True, content: bool = True, by_level: bool = False) -> bytes:
    """A DICOMDIR-like file: PATIENT › STUDY › SERIES › instance records, the instance records
    carrying the whole instance (content tree, private results, encapsulated document). Records are
    written depth first, or (`by_level`) every PATIENT first, then every STUDY…, linked by their
    offsets only, as the standard allows."""
    records: list[Dataset] = []
    for sample in samples:
        ds = read(sample)
        if with_patients:
            records.append(_record("PATIENT", ds, _PATIENT_TAGS))
        records.append(_record("STUDY", ds, _STUDY_TAGS))
        records.append(_record("SERIES", ds, ("Modality", "SeriesInstanceUID")))
        kind = {"SR": "SR DOCUMENT", "DOC": "ENCAP DOC"}.get(str(ds.get("Modality", "")), "IMAGE")
        leaf = _record(kind, ds if content else None, everything=True)
        for keyword in _PATIENT_TAGS + _STUDY_TAGS:
            if keyword in leaf:
                delattr(leaf, keyword)  # identity only from the records above
        leaf.ReferencedFileID = ["DXA", f"F{len(records):04d}"]
        leaf.ReferencedSOPClassUIDInFile = ds.SOPClassUID
        leaf.ReferencedSOPInstanceUIDInFile = ds.SOPInstanceUID
        if not content:
            leaf.InstanceNumber = 1
        records.append(leaf)
    if by_level:
        return _linked_by_offsets(records)
    return _write_directory(records)


def _write_directory(records: list[Dataset]) -> bytes:
    out = Dataset()
    out.FileSetID = "DXA"
    out.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    out.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    out.FileSetConsistencyFlag = 0
    out.DirectoryRecordSequence = Sequence(records)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.file_meta = meta
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, out, enforce_file_format=True)
    return buf.getvalue()


def _linked_by_offsets(depth_first: list[Dataset]) -> bytes:
    """The records reordered level by level and linked by their offsets: written once to learn
    where each record lands, then again with the offsets filled in (same sizes, same places)."""
    levels = {"PATIENT": 0, "STUDY": 1, "SERIES": 2}
    ordered = sorted(depth_first, key=lambda r: levels.get(str(r.DirectoryRecordType), 3))
    first = pydicom.dcmread(io.BytesIO(_write_directory(ordered)))
    where = {
        id(record): item.seq_item_tell for record, item in zip(ordered, first.DirectoryRecordSequence, strict=True)
    }
    patients = [r for r in depth_first if r.DirectoryRecordType == "PATIENT"]
    for one, following in itertools.pairwise(patients):
        one.OffsetOfTheNextDirectoryRecord = where[id(following)]
    for upper, lower in itertools.pairwise(depth_first):
        if levels.get(str(upper.DirectoryRecordType), 3) < levels.get(str(lower.DirectoryRecordType), 3):
            upper.OffsetOfReferencedLowerLevelDirectoryEntity = where[id(lower)]
    return _write_directory(ordered)


def without_offsets(data: bytes) -> bytes:
    """The same directory with every record's offsets cleared (as a careless writer leaves them)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for record in ds.DirectoryRecordSequence:
        record.OffsetOfTheNextDirectoryRecord = 0
        record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
