"""Devices: the row of a (manufacturer, model, serial), created on first sight. Nothing here
commits; two workers creating the same device meet on its unique identity key."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.converters import device_values
from db.inserts import insert_unless_exists
from db.models import Device
from db.txcache import cached
from ingest.report import DeviceIdentity


def find_or_create_device(session: Session, identity: DeviceIdentity) -> Device:
    """The device row for a (manufacturer, model, serial), recording its software version."""
    values = device_values(identity)
    known: dict[str, Device] = cached(session, "devices")  # a batch's files share machines
    device = known.get(values["identity_key"])
    if device is None:
        stmt = select(Device).where(Device.identity_key == values["identity_key"])
        device = session.scalars(stmt).one_or_none()
        if device is None:
            device = insert_unless_exists(session, Device, {**values, "software_versions": []}, ["identity_key"])
            if device is None:
                device = session.scalars(stmt).one()
        known[values["identity_key"]] = device
    version = (identity.software_version or "").strip()
    if version and version not in device.software_versions:
        session.refresh(device, with_for_update=True)  # the list is read-modify-write
        if version not in device.software_versions:
            device.software_versions = sorted({*device.software_versions, version})
    return device
