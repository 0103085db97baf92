"""Whole DICOM instances carried inside one dataset: a DICOMDIR whose records hold the results
themselves (a disc export, an archive's index written with content), or a sequence of complete
instances (a router's or archive's "multi-content" object).

Each carried instance becomes a dataset of its own, with the identity of its own place in the
hierarchy: the PATIENT record above it (or its own Patient ID), the STUDY record (dates, study
UID, accession), the SERIES record, then the record itself. Nothing is taken from the enclosing
dataset but its transfer syntax and character set: the envelope of an index names no patient,
and the envelope of a merged object names one patient for all. A carried instance that cannot
be tied to a patient is refused by the parser it goes to, for its missing Patient ID.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from ingest.errors import PatientMismatch, TooComplex

SOP_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
T_DIRECTORY_RECORDS = 0x00041220
T_FIRST_RECORD = 0x00041200
T_NEXT_RECORD = 0x00041400
T_LOWER_RECORD = 0x00041420
T_RECORD_TYPE = 0x00041430
T_REF_SOP_CLASS = 0x00041510
T_REF_SOP_INSTANCE = 0x00041511
T_SOP_CLASS = 0x00080016
T_SOP_INSTANCE = 0x00080018
T_PATIENT_ID = 0x00100020
T_CONTENT_SEQ = 0x0040A730
T_CHARSET = 0x00080005
_LEVELS = {"PATIENT": 0, "STUDY": 1, "SERIES": 2}
MAX_CARRIED = 256


def is_directory(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    sop = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    return sop == SOP_MEDIA_DIRECTORY or T_DIRECTORY_RECORDS in ds


def carried_instances(ds: Dataset) -> list[Dataset]:
    """The instances this dataset carries, each as a dataset of its own (empty for a plain file)."""
    out: list[Dataset] = []
    if T_DIRECTORY_RECORDS in ds:
        for chain in _record_chains(list(ds[T_DIRECTORY_RECORDS].value)):
            out.append(_instance(ds, chain))
    for tag in _other_sequences(ds):
        for item in ds[tag].value:  # a sequence of whole instances: each names its class and patient
            if T_SOP_CLASS in item and T_PATIENT_ID in item and T_RECORD_TYPE not in item:
                out.append(_instance(ds, [item]))
    if len(out) > MAX_CARRIED:
        raise TooComplex(f"this DICOM file carries more than {MAX_CARRIED} instances")
    return out


def _other_sequences(ds: Dataset) -> list[int]:
    """Top-level sequences other than the content tree and the directory, found without converting
    any element: converting a structured report's content tree costs ten times its parse."""
    found: list[int] = []
    for key in ds.keys():  # noqa: SIM118 (iterating a pydicom Dataset converts its elements)
        tag = int(key)
        if tag in (T_DIRECTORY_RECORDS, T_CONTENT_SEQ) or tag >> 16 == 0x7FE0:
            continue
        vr = getattr(ds.get_item(key), "VR", None)
        if vr is None:  # implicit VR: the dictionary says
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr == "SQ":
            found.append(tag)
    return found


def _instance(envelope: Dataset, chain: list[Dataset]) -> Dataset:
    """One carried instance: its ancestors' elements, then its own (the nearest wins)."""
    out = Dataset()
    out.file_meta = envelope.file_meta
    out.is_little_endian = envelope.is_little_endian
    out.is_implicit_VR = envelope.is_implicit_VR
    if T_CHARSET in envelope:
        out[T_CHARSET] = envelope[T_CHARSET]
    for record in chain:
        for elem in record:
            if elem.tag.group != 0x0004:
                out[elem.tag] = elem
    leaf = chain[-1]
    for own, referenced in ((T_SOP_CLASS, T_REF_SOP_CLASS), (T_SOP_INSTANCE, T_REF_SOP_INSTANCE)):
        if own not in out and referenced in leaf:
            out.add_new(own, "UI", leaf[referenced].value)
    return out


def _record_type(record: Dataset) -> str:
    return str(record.get(T_RECORD_TYPE).value if T_RECORD_TYPE in record else "").strip().upper()


def _record_chains(records: list[Dataset]) -> list[list[Dataset]]:
    """Each leaf record (any record below the series level) with its PATIENT/STUDY/SERIES
    ancestors: by the directory's offsets when they all resolve, else by record order (a
    directory written depth first, as every writer does)."""
    chains = _chains_by_offset(records)
    return chains if chains is not None else _chains_by_order(records)


def _chains_by_order(records: list[Dataset]) -> list[list[Dataset]]:
    """Depth first: each record under the last record of the level above it. A PATIENT, STUDY or
    SERIES record followed by one of its own level or above has nothing under it in this order,
    which means the records are not depth first (every PATIENT first, then every STUDY…): read in
    order, they would hang under the wrong patient, so the file is refused."""
    chains: list[list[Dataset]] = []
    above: list[Dataset | None] = [None, None, None]
    previous: int | None = None
    for record in records:
        level = _LEVELS.get(_record_type(record))
        if previous is not None and level is not None and level <= previous:
            raise PatientMismatch(
                "the records of this DICOM directory are not in an order that ties each result to its "
                "patient, and their offsets do not say either; send the result files themselves"
            )
        previous = level
        if level is not None:
            above[level] = record
            for lower in range(level + 1, 3):
                above[lower] = None
            continue
        chains.append([r for r in above if r is not None] + [record])
    return chains


def _chains_by_offset(records: list[Dataset]) -> list[list[Dataset]] | None:
    at: dict[int, Dataset] = {}
    for record in records:
        tell = getattr(record, "seq_item_tell", None)
        if tell is None:
            return None
        at[tell] = record
        at[tell + 8] = record  # an offset to the item's first element rather than its tag
    first_records = [r for r in records if _offset(r, T_NEXT_RECORD) or _offset(r, T_LOWER_RECORD)]
    if not first_records:
        return None
    seen: set[int] = set()
    chains: list[list[Dataset]] = []

    def walk(offset: int, above: list[Dataset]) -> bool:
        while offset:
            record = at.get(offset)
            if record is None or id(record) in seen:
                return False  # a dangling or circular offset: the order is the only guide
            seen.add(id(record))
            lower = _offset(record, T_LOWER_RECORD)
            if _LEVELS.get(_record_type(record)) is None:
                chains.append([*above, record])
            if lower and not walk(lower, [*above, record]):
                return False
            offset = _offset(record, T_NEXT_RECORD)
        return True

    root = records[0]
    start = getattr(root, "seq_item_tell", 0)
    if not walk(start, []) or len(seen) != len(records):
        return None
    return chains


def _offset(record: Dataset, tag: int) -> int:
    if tag not in record:
        return 0
    value = record[tag].value
    return int(value) if isinstance(value, int) else 0
