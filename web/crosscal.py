"""The cross-calibration calculator behind the QA machines page: what the device cards list and
the JSON shape of a preview. The computation itself is `services.crosscal.preview_crosscal`, the one
`dxa crosscal import` runs, so the page and the command line can never disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from db.models import CrossCalibrationRow, Device
from services.crosscal import CrossCalPreview


@dataclass(frozen=True)
class CrossCalCard:
    """A stored cross-calibration as one machine's card shows it. `role` says which side this
    machine is: for in vivo, `old` (converted from) or `new` (converted to); for a phantom
    check the two units are peers (`a`/`b`)."""

    pk: int
    other: str
    other_device_id: int
    role: str
    kind: str
    sites: tuple[str, ...]
    performed_on: date | None
    lsc_g_cm2: dict[str, float]
    slope: float | None  # in vivo only: new = slope × old + intercept
    intercept: float | None
    notes: str | None


def _label(device: Device) -> str:
    serial = f"S/N {device.serial}" if device.serial else "no serial"
    return f"{device.manufacturer} {device.model} ({serial})"


def device_cards(session: Session) -> dict[int, list[CrossCalCard]]:
    """Per device id, its cross-calibrations with slope, intercept and notes (the generic device
    listing in `web.queries` carries only kind, sites and LSC)."""
    cards: dict[int, list[CrossCalCard]] = defaultdict(list)
    rows = session.scalars(
        select(CrossCalibrationRow)
        .options(selectinload(CrossCalibrationRow.device_a), selectinload(CrossCalibrationRow.device_b))
        .order_by(CrossCalibrationRow.id)
    )
    for row in rows:
        in_vivo = row.kind == "in_vivo"
        roles = ("old", "new") if in_vivo else ("a", "b")
        sides = ((row.device_a, row.device_b, roles[0]), (row.device_b, row.device_a, roles[1]))
        for this, other, role in sides:
            cards[this.id].append(
                CrossCalCard(
                    pk=row.id,
                    other=_label(other),
                    other_device_id=other.id,
                    role=role,
                    kind=row.kind,
                    sites=tuple(row.sites),
                    performed_on=row.performed_on,
                    lsc_g_cm2={str(k): float(v) for k, v in row.lsc_g_cm2.items()},
                    slope=row.slope if in_vivo else None,
                    intercept=row.intercept if in_vivo else None,
                    notes=row.notes,
                )
            )
    return cards


def card_json(card: CrossCalCard) -> dict[str, Any]:
    return {
        "id": card.pk,
        "other": card.other,
        "other_device_id": card.other_device_id,
        "role": card.role,
        "kind": card.kind,
        "sites": list(card.sites),
        "performed_on": card.performed_on.isoformat() if card.performed_on else None,
        "lsc_g_cm2": card.lsc_g_cm2,
        "slope": card.slope,
        "intercept": card.intercept,
        "notes": card.notes,
    }


def _device_json(device: Device) -> dict[str, Any]:
    return {"id": device.id, "manufacturer": device.manufacturer, "model": device.model, "serial": device.serial}


def preview_json(preview: CrossCalPreview) -> dict[str, Any]:
    """Every figure the calculator shows for one (kind, machines, site) group."""
    out: dict[str, Any] = {
        "kind": preview.kind,
        "device_a": _device_json(preview.device_a),
        "device_b": _device_json(preview.device_b),
        "site": preview.site,
        "count": preview.count,
        "mean_a_g_cm2": preview.mean_a,
        "mean_b_g_cm2": preview.mean_b,
        "rms_sd_a_g_cm2": preview.rms_sd_a,
        "rms_sd_b_g_cm2": preview.rms_sd_b,
        "lsc_g_cm2": preview.lsc_g_cm2,
        "lsc_percent": preview.lsc_percent,
        "note": preview.note,
        "saveable": preview.saveable,
        "error": preview.error,
    }
    if preview.phantom is not None:
        out["phantom"] = {
            "difference_percent": preview.phantom.difference_percent,
            "tolerance_percent": preview.tolerance_percent,
            "accepted": preview.phantom.accepted,
            "message": preview.phantom.message,
            "pooled_lsc_g_cm2": preview.phantom.pooled_lsc_g_cm2,
        }
    if preview.in_vivo is not None:
        v = preview.in_vivo
        out["in_vivo"] = {
            "patients": v.patients,
            "recommended_patients": preview.recommended_patients,
            "slope": v.slope,
            "intercept": v.intercept,
            "r": v.r,
            "see_g_cm2": v.see_g_cm2,
            "glsc_g_cm2": v.glsc_g_cm2,
            "glsc_percent": preview.lsc_percent,
            "note": v.note,
        }
    return out
