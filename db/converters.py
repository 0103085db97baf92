"""Explicit translation between rows (`db.models`) and domain values (`ingest.report`, `monitor.model`).

One place decides how a domain field is stored: exam ids cross to the monitor as the string of the
database id, device identity keys use `monitor.identity`'s normalisation so the database and the
monitor agree on what "the same machine" means, and alerts are stored as {"code", "message"}.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from sqlalchemy import Row

from db.models import (
    ComparisonRow,
    CrossCalibrationRow,
    Device,
    NextScanRow,
    Patient,
    TherapyRow,
)
from db.models import (
    Exam as ExamRow,
)
from db.models import (
    Measurement as MeasurementRow,
)
from ingest.report import DeviceIdentity, PatientInfo, SiteMeasurement
from monitor.identity import normalize_manufacturer, normalize_model, normalize_serial
from monitor.model import (
    Alert,
    Comparison,
    CrossCalibration,
    Exam,
    Machine,
    Measurement,
    NextScan,
    Phrase,
    Therapy,
)
from monitor.phrases import from_data, to_data

MAX_NAME_LENGTH = 255

# A plain result row of any columns (read without building ORM objects).
PlainRow = Row[*tuple[Any, ...]]

# --------------------------------------------------------------------------- identities


def model_key(manufacturer: str, model: str) -> str:
    return f"{normalize_manufacturer(manufacturer)}|{normalize_model(manufacturer, model)}"


def device_identity_key(manufacturer: str, model: str, serial: str | None) -> str:
    """Unique per physical machine; all serial-less units of one model share the weak key
    (`…|` with an empty serial), which the monitor never counts as a machine identity."""
    return f"{model_key(manufacturer, model)}|{normalize_serial(serial) or ''}"


def sanitise_name(name: str) -> str:
    """A received file name as text: last path component, no control characters, bounded."""
    text = unicodedata.normalize("NFC", name).replace("\\", "/").split("/")[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    return text[:MAX_NAME_LENGTH] or "(unnamed)"


def exam_id_str(exam_id: int) -> str:
    return str(exam_id)


def exam_id_int(exam_id: str) -> int:
    try:
        return int(exam_id)
    except ValueError:
        raise ValueError(f"not a stored exam id: {exam_id!r}") from None


# --------------------------------------------------------------------------- ingest -> rows


def patient_values(info: PatientInfo) -> dict[str, Any]:
    """Column values for a patient from a parsed file (identifier and issuer are the key)."""
    return {
        "identifier": info.patient_id.strip(),
        "issuer": (info.issuer or "").strip(),
        "name": info.name,
        "birth_date": info.birth_date,
        "sex": info.sex,
    }


def device_values(identity: DeviceIdentity) -> dict[str, Any]:
    serial = identity.serial.strip() if identity.serial and identity.serial.strip() else None
    return {
        "manufacturer": identity.manufacturer.strip(),
        "model": identity.model.strip(),
        "serial": serial,
        "identity_key": device_identity_key(identity.manufacturer, identity.model, serial),
        "model_key": model_key(identity.manufacturer, identity.model),
        "identity_strength": "serial" if serial else "weak",
    }


def measurement_values(site: SiteMeasurement, *, exam_id: int, source_file_id: int | None) -> dict[str, Any]:
    """A measurement row's column values: the ORM row's (`measurement_row`) and the bulk INSERT's
    (`db.measurements.NewMeasurement`) are both made from this one list."""
    return {
        "exam_id": exam_id,
        "site": site.site,
        "side": site.side,
        "bmd": site.bmd,
        "bmc_g": site.bmc_g,
        "area_cm2": site.area_cm2,
        "t_score": site.t_score,
        "z_score": site.z_score,
        "provenance": measurement_provenance(site, source_file_id),
        "source_file_id": source_file_id,
    }


def measurement_row(site: SiteMeasurement, *, exam_id: int, source_file_id: int | None) -> MeasurementRow:
    return MeasurementRow(**measurement_values(site, exam_id=exam_id, source_file_id=source_file_id))


def measurement_provenance(site: SiteMeasurement, source_file_id: int | None) -> dict[str, Any]:
    """Where each value came from: {field: {"file": id, "at": parser's location}}."""
    origin = {"file": source_file_id, "at": site.provenance}
    fields = ("bmd", "t_score", "z_score", "bmc_g", "area_cm2")
    return {name: origin for name in fields if getattr(site, name) is not None}


# --------------------------------------------------------------------------- rows -> monitor


def machine_from_device(device: Device) -> Machine:
    return Machine(manufacturer=device.manufacturer, model=device.model, serial=device.serial)


def measurement_to_domain(row: MeasurementRow) -> Measurement:
    return measurement_from_columns(row.site, row.side, row.bmd, row.t_score, row.z_score, row.area_cm2, row.provenance)


def measurement_from_columns(
    site: str,
    side: str | None,
    bmd: float,
    t_score: float | None,
    z_score: float | None,
    area_cm2: float | None,
    provenance: Mapping[str, Any] | None,
) -> Measurement:
    """A measurement from its columns, whether read as an ORM row or as a plain result row (a
    batch's history is read as plain rows: building ORM objects cost more than evaluating)."""
    if not provenance:  # nothing printed (most rows: `provenance_printed`)
        return Measurement(site=site, side=side, bmd=bmd, t_score=t_score, z_score=z_score, area_cm2=area_cm2)
    printed = (provenance or {}).get("vendor_lsc") or {}
    lsc = printed.get("g_cm2")
    verdicts = (provenance or {}).get("vendor_significant") or {}
    return Measurement(
        site=site,
        side=side,
        bmd=bmd,
        t_score=t_score,
        z_score=z_score,
        area_cm2=area_cm2,
        vendor_lsc_g_cm2=float(lsc) if isinstance(lsc, int | float) and lsc > 0 else None,
        vendor_lsc_file=str(printed["file"]) if printed.get("file") is not None else None,
        vendor_significant=tuple(sorted((str(k), bool(v)) for k, v in verdicts.items())),
    )


def provenance_printed(text: str | None) -> Mapping[str, Any] | None:
    """A measurement's provenance read as its JSON text (`db.history` reads it so), decoded only
    when it may hold what `measurement_from_columns` takes from it: what the machine printed
    (`vendor_lsc`, `vendor_significant`). Most hold only where each value came from, and decoding
    every row's cost a good part of loading a history. None (nothing printed) for the others, which
    `measurement_from_columns` reads as it reads their decoded value."""
    if text is None or ("vendor_" not in text and "\\u" not in text):
        return None
    decoded = json.loads(text)
    return decoded if isinstance(decoded, Mapping) else None


def sorted_measurements(row: ExamRow) -> list[MeasurementRow]:
    """By site then side (no side first), the same on both backends and before a reload."""
    return sorted(row.measurements, key=lambda m: (m.site, m.side or ""))


def exam_to_domain(row: ExamRow) -> Exam:
    return Exam(
        exam_id=exam_id_str(row.id),
        date=row.exam_date,
        machine=machine_from_device(row.device),
        measurements=tuple(measurement_to_domain(m) for m in sorted_measurements(row)),
        scan_mode=row.scan_mode,
        analysis_protocol=row.analysis_protocol,
    )


def therapy_to_domain(row: TherapyRow | PlainRow) -> Therapy:
    """From the ORM row or a plain result row of the same columns (`db.therapies.load_therapies_of`)."""
    return Therapy(
        agent=row.agent,
        drug_class=row.drug_class,
        start=row.start_date,
        stop=row.stop_date,
        glucocorticoid=row.glucocorticoid,
    )


def therapy_row(therapy: Therapy, *, patient_id: int, source: str | None = None) -> TherapyRow:
    return TherapyRow(
        patient_id=patient_id,
        agent=therapy.agent,
        drug_class=therapy.drug_class,
        start_date=therapy.start,
        stop_date=therapy.stop,
        glucocorticoid=therapy.glucocorticoid,
        source=source,
    )


def cross_calibration_to_domain(
    row: CrossCalibrationRow | PlainRow, machine_a: Machine | None = None, machine_b: Machine | None = None
) -> CrossCalibration:
    """From the ORM row (its machines from its devices), or from a plain row of its columns with
    its two machines given (`db.calibration.load_cross_calibrations`)."""
    kind: Literal["phantom", "in_vivo"] = "phantom" if row.kind == "phantom" else "in_vivo"
    return CrossCalibration(
        machine_a=machine_a or machine_from_device(row.device_a),
        machine_b=machine_b or machine_from_device(row.device_b),
        kind=kind,
        sites=frozenset(row.sites),
        lsc_g_cm2=tuple(sorted((str(site), float(lsc)) for site, lsc in row.lsc_g_cm2.items())),
        slope=row.slope,
        intercept=row.intercept,
        performed_on=row.performed_on,
    )


# --------------------------------------------------------------------------- evaluation results


def comparison_row(comparison: Comparison, *, patient_id: int, position: int) -> ComparisonRow:
    return ComparisonRow(**comparison_values(comparison, patient_id=patient_id, position=position))


def comparison_values(comparison: Comparison, *, patient_id: int, position: int) -> dict[str, Any]:
    """A comparison's columns but its id and time: for an ORM row, or one of a Core insert's many."""
    return {
        **comparison_scalars(comparison, patient_id=patient_id, position=position),
        "notes": notes_to_json(comparison.notes),
    }


def notes_to_json(notes: Iterable[Phrase]) -> list[dict[str, Any]] | None:
    """A comparison's phrases as its `notes` column holds them (None when there are none)."""
    return [to_data(n) for n in notes] or None


def comparison_scalars(comparison: Comparison, *, patient_id: int, position: int) -> dict[str, Any]:
    """`comparison_values` but the phrases (`notes`, JSON): the columns compared or written as they are."""
    values = zip(COMPARISON_COLUMNS, comparison_columns(comparison, position), strict=True)
    return {"patient_id": patient_id, **dict(values)}


# A comparison's columns but its id, patient, phrases (`notes`) and time, in `comparison_columns`' order.
COMPARISON_COLUMNS = (
    "position",
    "site",
    "side",
    "from_exam_id",
    "to_exam_id",
    "reference",
    "status",
    "delta_g_cm2",
    "percent_change",
    "lsc_g_cm2",
    "lsc_source",
    "significance",
    "dissimilar",
    "reason",
)


def comparison_columns(comparison: Comparison, position: int) -> tuple[Any, ...]:
    """The values of `COMPARISON_COLUMNS` (a batch's verdicts are compared with their stored rows
    and written as tuples: a dict per comparison cost more than the comparing)."""
    return (
        position,
        comparison.site,
        comparison.side,
        exam_id_int(comparison.from_exam),
        exam_id_int(comparison.to_exam),
        comparison.reference,
        comparison.status,
        comparison.delta_g_cm2,
        comparison.percent_change,
        comparison.lsc_g_cm2,
        comparison.lsc_source,
        comparison.significance,
        comparison.dissimilar,
        comparison.reason,
    )


def comparison_to_export(row: ComparisonRow) -> dict[str, Any]:
    """docs/architecture.md, "Exports" comparison object (exam ids as strings, like `exams[].exam_id`)."""
    return {
        "site": row.site,
        "side": row.side,
        "from_exam": exam_id_str(row.from_exam_id),
        "to_exam": exam_id_str(row.to_exam_id),
        "reference": row.reference,
        "status": row.status,
        "delta_g_cm2": row.delta_g_cm2,
        "percent_change": row.percent_change,
        "lsc_g_cm2": row.lsc_g_cm2,
        "lsc_source": row.lsc_source,
        "significance": row.significance,
        "dissimilar": row.dissimilar,
        "reason": row.reason,
    }


def comparison_to_domain(row: ComparisonRow) -> Comparison:
    exported = comparison_to_export(row)
    return Comparison(**exported, notes=phrases_from_json(row.notes))


def phrases_from_json(items: Iterable[Mapping[str, Any]] | None) -> tuple[Phrase, ...]:
    """Stored phrases; none when the row predates them (its English `reason` still reads)."""
    try:
        return tuple(from_data(item) for item in items or ())
    except (KeyError, TypeError, ValueError):
        return ()


def phrase_from_json(item: Mapping[str, Any] | None) -> Phrase | None:
    found = phrases_from_json([item] if item else None)
    return found[0] if found else None


def alerts_to_json(alerts: Iterable[Alert]) -> list[dict[str, str]]:
    return [{"code": a.code, "message": a.message, **({"basis": a.basis} if a.basis else {})} for a in alerts]


def alerts_from_json(items: Iterable[Mapping[str, Any]]) -> tuple[Alert, ...]:
    return tuple(Alert(code=str(i["code"]), message=str(i["message"]), basis=str(i.get("basis", ""))) for i in items)


def next_scan_to_domain(row: NextScanRow) -> NextScan:
    return NextScan(due=row.due, rule_id=row.rule_id, reason=row.reason, alerts=alerts_from_json(row.alerts))


def next_scan_to_export(row: NextScanRow | None) -> dict[str, Any]:
    if row is None:
        return {"due": None, "rule_id": None, "reason": "", "alerts": []}
    return {
        "due": row.due.isoformat() if row.due else None,
        "rule_id": row.rule_id,
        "reason": row.reason,
        "alerts": list(row.alerts),
    }


def exam_to_export(row: ExamRow) -> dict[str, Any]:
    return {
        "exam_id": exam_id_str(row.id),
        "date": row.exam_date.isoformat(),
        "device": {
            "manufacturer": row.device.manufacturer,
            "model": row.device.model,
            "serial": row.device.serial,
        },
        "measurements": [
            {"site": m.site, "side": m.side, "bmd": m.bmd, "t_score": m.t_score, "z_score": m.z_score}
            for m in sorted_measurements(row)
        ],
    }


def patient_key(row: Patient) -> str:
    """The `patient_id` other tools see: the identifier as the file gave it."""
    return row.identifier
