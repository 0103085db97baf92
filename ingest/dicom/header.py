"""What every DICOM result file carries in its header: patient, exam date, device, UIDs.

Elements are fetched by tag (not keyword) because keyword lookups go through pydicom's
dictionary on every access; the same helpers serve the SR walk, where that cost adds up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ingest.errors import MissingField
from ingest.report import DeviceIdentity, PatientInfo

T_SPECIFIC_CHARSET = 0x00080005
T_SOP_CLASS = 0x00080016
T_SOP_INSTANCE = 0x00080018
T_STUDY_DATE = 0x00080020
T_SERIES_DATE = 0x00080021
T_ACQ_DATE = 0x00080022
T_CONTENT_DATE = 0x00080023
T_ACCESSION = 0x00080050
T_MODALITY = 0x00080060
T_MANUFACTURER = 0x00080070
T_MODEL = 0x00081090
T_PATIENT_NAME = 0x00100010
T_PATIENT_ID = 0x00100020
T_ISSUER = 0x00100021
T_BIRTH_DATE = 0x00100030
T_SEX = 0x00100040
T_BODY_PART = 0x00180015
T_DEVICE_SERIAL = 0x00181000
T_SOFTWARE = 0x00181020
T_STUDY_UID = 0x0020000D
T_LATERALITY = 0x00200060
T_IMAGE_COMMENTS = 0x00204000

SOP_ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
SOP_COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SOP_BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SR_SOP_CLASSES = frozenset({SOP_ENHANCED_SR, SOP_COMPREHENSIVE_SR, SOP_BASIC_TEXT_SR})
SOP_ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SOP_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def value(ds: Dataset, tag: int) -> Any:
    elem = ds.get(tag)
    return None if elem is None else elem.value


_BINARY_VRS = frozenset(
    {"US", "UL", "SS", "SL", "FL", "FD", "OB", "OW", "OF", "OD", "OL", "OV", "SQ", "AT", "UN", "SV", "UV"}
)


def _decoder(ds: Dataset) -> Callable[[bytes], str] | None:
    """A single-codec decoder for the file's character set, or None (ISO 2022 switching)."""
    elem = ds.get_item(T_SPECIFIC_CHARSET)
    raw = None if elem is None else elem.value
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace").split("\\")
    encodings = convert_encodings(raw)
    if len(encodings) != 1:
        return None
    codec = encodings[0]
    return lambda b: b.decode(codec, "replace")


def text(ds: Dataset, tag: int) -> str | None:
    """An element as a stripped string (first value of a multi-valued one), or None if empty.

    Text elements still raw are decoded straight from their bytes: pydicom's conversion of
    each element (value validation, VR lookup) costs more than the rest of a parse.
    """
    raw = ds.get_item(tag)
    if raw is None:
        return None
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) and raw.VR not in _BINARY_VRS:
        decode = _decoder(ds)
        if decode is not None:
            s = decode(raw.value).split("\\")[0].strip(" \x00")
            return s or None
    v = value(ds, tag)
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("latin-1")
    elif isinstance(v, (list, tuple, MultiValue)):  # not a PersonName: it iterates its characters
        items = list(v)
        v = items[0] if items else ""
    s = str(v).strip().strip("\x00").strip()
    return s or None


def dicom_date(raw: str | None) -> date | None:
    """DA 'YYYYMMDD' (or the old 'YYYY.MM.DD'); None when absent or invalid."""
    if not raw:
        return None
    digits = re.sub(r"[^0-9]", "", raw)[:8]
    if len(digits) != 8:
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def exam_date(ds: Dataset) -> date:
    for tag in (T_STUDY_DATE, T_CONTENT_DATE, T_ACQ_DATE, T_SERIES_DATE):
        d = dicom_date(text(ds, tag))
        if d:
            return d
    raise MissingField("exam date: the DICOM header has no Study Date (0008,0020) or Content Date")


def patient(ds: Dataset) -> PatientInfo:
    pid = text(ds, T_PATIENT_ID)
    if not pid:
        raise MissingField("patient ID: the DICOM header has no Patient ID (0010,0020)")
    sex = (text(ds, T_SEX) or "").upper()[:1] or None
    return PatientInfo(
        patient_id=pid,
        issuer=text(ds, T_ISSUER),
        name=text(ds, T_PATIENT_NAME),
        birth_date=dicom_date(text(ds, T_BIRTH_DATE)),
        sex=sex if sex in ("F", "M", "O") else None,
    )


_MODEL_SERIAL = re.compile(r"^(?P<model>.*?)\s*\(\s*S\s*/\s*N\s*[:#]?\s*(?P<serial>[^)]*?)\s*\)\s*$", re.I)


def split_model_serial(model: str) -> tuple[str, str | None]:
    """'Horizon Ci (S/N 301234M)' → ('Horizon Ci', '301234M'); 'Lunar iDXA' → ('Lunar iDXA', None)."""
    m = _MODEL_SERIAL.match(model.strip())
    if not m:
        return model.strip(), None
    return m.group("model").strip(), (m.group("serial").strip() or None)


def device(
    ds: Dataset, *, fallback_model: str | None = None, software: str | None = None, serial_from_model: bool
) -> DeviceIdentity:
    """The machine as (manufacturer, model, serial). DeviceSerialNumber wins; a serial inside the
    model string is used only where the vendor is known to print it there (Hologic)."""
    manufacturer = text(ds, T_MANUFACTURER)
    raw_model = text(ds, T_MODEL) or fallback_model
    if not manufacturer:
        raise MissingField("device manufacturer: the DICOM header has no Manufacturer (0008,0070)")
    if not raw_model:
        raise MissingField("device model: the DICOM header has no Manufacturer's Model Name (0008,1090)")
    model, model_serial = split_model_serial(raw_model)
    if fallback_model and model_serial is None:
        model_serial = split_model_serial(fallback_model)[1]
    serial = text(ds, T_DEVICE_SERIAL) or (model_serial if serial_from_model else None)
    return DeviceIdentity(
        manufacturer=manufacturer,
        model=model,
        serial=serial,
        software_version=software or text(ds, T_SOFTWARE),
    )


def uids(ds: Dataset) -> dict[str, str | None]:
    return {
        "sop_instance_uid": text(ds, T_SOP_INSTANCE),
        "study_instance_uid": text(ds, T_STUDY_UID),
        "accession": text(ds, T_ACCESSION),
    }
