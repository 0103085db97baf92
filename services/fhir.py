"""FHIR R4 export: one `Bundle` (type collection) per patient, built from the JSON export object
(docs/architecture.md, "Exports").

Per exam a `DiagnosticReport` coded LOINC 83311-1 ("Bone density quantitative measurement by
DXA panel") whose results are `Observation`s per site: BMD in UCUM `g/cm2`, T-score and Z-score
(UCUM annotations `{T-score}`, `{Z-score}`). Each distinct machine is a `Device` carrying its
serial number; observations point at it, so a reader can tell which values are comparable.

LOINC codes chosen (the DXA "Views for bone density" terms of panel 83311-1):

- lumbar range (L1-L4, L2-L4, ...) and single vertebrae: BMD 24966-4, T 38267-1, Z 85394-5;
- total hip: BMD 38261-4, T 38264-8, Z 80933-5; left 46278-8 / 80946-7 / 80938-4,
  right 46279-6 / 80945-9 / 80937-6;
- femoral neck and the other proximal-femur regions ("DXA Femur"): BMD 24701-5, T 38263-0,
  Z 80934-3; left 80954-1 / 80948-3 / 80940-0, right 80953-3 / 80947-5 / 80939-2;
- radius sites (1/3, ultradistal, total; "DXA Radius and Ulna"): BMD 24890-6, T 38265-5, Z 80932-7;
- anything else (total body): BMD 46383-6 "DXA Bone", no T/Z code.

The exact region (e.g. "L2-L4", "femoral neck, mean of both sides") is in `bodySite.text`, so
nothing is lost where LOINC is coarser than our vocabulary. `mean` sides use the unsided code.
Resource ids are UUIDv5 of the patient and exam, so exporting twice gives the same Bundle.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DXA_PANEL = ("83311-1", "Bone density quantitative measurement by DXA panel")
_NAMESPACE = uuid.UUID("6f1c2a4e-8a63-4c55-9d55-3a1c0b7d2e10")

Code = tuple[str, str]
# (bmd, t_score, z_score) codes, each (code, display)
_SPINE: tuple[Code, Code | None, Code | None] = (
    ("24966-4", "DXA Lumbar spine [Mass/Area] Bone density"),
    ("38267-1", "DXA Lumbar spine [T-score] Bone density"),
    ("85394-5", "DXA Lumbar spine [Z-score] Bone density"),
)
_HIP = {
    None: (
        ("38261-4", "DXA Hip [Mass/Area] Bone density"),
        ("38264-8", "DXA Hip [T-score] Bone density"),
        ("80933-5", "DXA Hip [Z-score] Bone density"),
    ),
    "left": (
        ("46278-8", "DXA Hip - left [Mass/Area] Bone density"),
        ("80946-7", "DXA Hip - left [T-score] Bone density"),
        ("80938-4", "DXA Hip - left [Z-score] Bone density"),
    ),
    "right": (
        ("46279-6", "DXA Hip - right [Mass/Area] Bone density"),
        ("80945-9", "DXA Hip - right [T-score] Bone density"),
        ("80937-6", "DXA Hip - right [Z-score] Bone density"),
    ),
}
_FEMUR = {
    None: (
        ("24701-5", "DXA Femur [Mass/Area] Bone density"),
        ("38263-0", "DXA Femur [T-score] Bone density"),
        ("80934-3", "DXA Femur [Z-score] Bone density"),
    ),
    "left": (
        ("80954-1", "DXA Femur - left [Mass/Area] Bone density"),
        ("80948-3", "DXA Femur - left [T-score] Bone density"),
        ("80940-0", "DXA Femur - left [Z-score] Bone density"),
    ),
    "right": (
        ("80953-3", "DXA Femur - right [Mass/Area] Bone density"),
        ("80947-5", "DXA Femur - right [T-score] Bone density"),
        ("80939-2", "DXA Femur - right [Z-score] Bone density"),
    ),
}
_RADIUS: tuple[Code, Code | None, Code | None] = (
    ("24890-6", "DXA Radius and Ulna [Mass/Area] Bone density"),
    ("38265-5", "DXA Radius and Ulna [T-score] Bone density"),
    ("80932-7", "DXA Radius and Ulna [Z-score] Bone density"),
)
_OTHER: tuple[Code, Code | None, Code | None] = (("46383-6", "DXA Bone [Mass/Area] Bone density"), None, None)

_REGION_TEXT = {
    "femoral_neck": "femoral neck",
    "total_hip": "total hip",
    "trochanter": "trochanter",
    "intertrochanter": "intertrochanter",
    "wards": "Ward's triangle",
    "radius_33": "radius 1/3 (33 %)",
    "radius_ud": "radius ultradistal",
    "radius_total": "radius total",
    "total_body": "total body",
}


def loinc_codes(site: str, side: str | None) -> tuple[Code, Code | None, Code | None]:
    """LOINC (BMD, T-score, Z-score) codes for a site and side of our vocabulary."""
    sided = side if side in ("left", "right") else None
    if re.fullmatch(r"L[1-5](-L[1-5])?", site):
        return _SPINE
    if site == "total_hip":
        return _HIP[sided]
    if site in ("femoral_neck", "trochanter", "intertrochanter", "wards"):
        return _FEMUR[sided]
    if site.startswith("radius_"):
        return _RADIUS
    return _OTHER


def body_site_text(site: str, side: str | None) -> str:
    region = _REGION_TEXT.get(site, f"lumbar spine {site}" if site.startswith("L") else site)
    if side == "mean":
        return f"{region}, mean of left and right"
    return f"{side} {region}" if side else region


def _urn(*parts: object) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, '/'.join(str(p) for p in parts))}"


def _concept(code: Code) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code[0], "display": code[1]}], "text": code[1]}


def _device_key(device: dict[str, Any]) -> str:
    return "|".join(str(device.get(k) or "").strip().lower() for k in ("manufacturer", "model", "serial"))


def build_bundle(export: dict[str, Any]) -> dict[str, Any]:
    """A FHIR R4 Bundle (collection) for one patient's docs/architecture.md, "Exports" export dict."""
    pid = str(export["patient_id"])
    patient_url = _urn("patient", pid)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": {
                "resourceType": "Patient",
                "id": patient_url.removeprefix("urn:uuid:"),
                "identifier": [{"value": pid}],
            },
        }
    ]
    devices: dict[str, str] = {}
    for exam in export.get("exams", []):
        device = exam.get("device") or {}
        key = _device_key(device)
        if key not in devices:
            url = _urn("device", pid, key)
            devices[key] = url
            resource: dict[str, Any] = {
                "resourceType": "Device",
                "id": url.removeprefix("urn:uuid:"),
                "manufacturer": device.get("manufacturer") or "unknown",
                "deviceName": [{"name": device.get("model") or "unknown", "type": "model-name"}],
                "modelNumber": device.get("model") or "unknown",
            }
            if device.get("serial"):
                resource["serialNumber"] = device["serial"]
            entries.append({"fullUrl": url, "resource": resource})
    for exam in export.get("exams", []):
        exam_id = str(exam["exam_id"])
        when = str(exam["date"])
        device_url = devices[_device_key(exam.get("device") or {})]
        results = []
        for m in exam.get("measurements", []):
            bmd_code, t_code, z_code = loinc_codes(m["site"], m.get("side"))
            body = {"text": body_site_text(m["site"], m.get("side"))}
            for kind, code, value, unit in (
                ("bmd", bmd_code, m.get("bmd"), ("g/cm2", "g/cm2")),
                ("t", t_code, m.get("t_score"), ("{T-score}", "T-score")),
                ("z", z_code, m.get("z_score"), ("{Z-score}", "Z-score")),
            ):
                if code is None or value is None:
                    continue
                url = _urn("obs", pid, exam_id, m["site"], m.get("side"), kind)
                results.append({"reference": url})
                entries.append(
                    {
                        "fullUrl": url,
                        "resource": {
                            "resourceType": "Observation",
                            "id": url.removeprefix("urn:uuid:"),
                            "status": "final",
                            "category": [
                                {
                                    "coding": [
                                        {
                                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                            "code": "imaging",
                                        }
                                    ]
                                }
                            ],
                            "code": _concept(code),
                            "subject": {"reference": patient_url},
                            "effectiveDateTime": when,
                            "bodySite": body,
                            "device": {"reference": device_url},
                            "valueQuantity": {
                                "value": value,
                                "unit": unit[1],
                                "system": UCUM,
                                "code": unit[0],
                            },
                        },
                    }
                )
        report_url = _urn("report", pid, exam_id)
        entries.append(
            {
                "fullUrl": report_url,
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "id": report_url.removeprefix("urn:uuid:"),
                    "identifier": [{"system": "urn:dxa-monitor:exam", "value": exam_id}],
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                    "code": "RAD",
                                    "display": "Radiology",
                                }
                            ]
                        }
                    ],
                    "code": _concept(DXA_PANEL),
                    "subject": {"reference": patient_url},
                    "effectiveDateTime": when,
                    "result": results,
                },
            }
        )
    return {
        "resourceType": "Bundle",
        "id": _urn("bundle", pid).removeprefix("urn:uuid:"),
        "type": "collection",
        "entry": entries,
    }
