"""Devices: the row of a (manufacturer, model, serial), created on first sight. Nothing here
commits; two workers creating the same device meet on its unique identity key."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.converters import device_values
from db.inserts import insert_unless_exists
from db.models import Device
from db.transaction_cache import transaction_cache
from ingest.report import DeviceIdentity


def find_or_create_device(session: Session, identity: DeviceIdentity, *, record_version: bool = True) -> Device:
    """The device row for a (manufacturer, model, serial), recording its software version (unless
    `record_version` is False: a batch store records the versions of all its files at its end,
    `record_software_version`, so that the machine's row is locked only for a moment)."""
    values = device_values(identity)
    stmt = select(Device).where(Device.identity_key == values["identity_key"])
    device = _batch_devices(session).get(values["identity_key"]) or session.scalars(stmt).one_or_none()
    if device is None:
        device = insert_unless_exists(session, Device, {**values, "software_versions": []}, ["identity_key"])
        if device is None:
            device = session.scalars(stmt).one()
    if record_version:
        record_software_version(session, device, identity.software_version)
    return device


def record_software_version(session: Session, device: Device, software_version: str | None) -> None:
    """Add a software version to the machine's list (a read-modify-write under the row's lock,
    taken only when the version is new to the list).

    The lock is `FOR NO KEY UPDATE`, not `FOR UPDATE`: every transaction that stores an exam of the
    machine holds a `FOR KEY SHARE` lock on its row (the exam's foreign key) until it commits, which
    `FOR UPDATE` waits for. Two batches of two workers, each having stored exams of the machine
    and each meeting a version new to it, then waited on each other (a deadlock, bench/pipeline.py
    with two workers); the list is not a key, and the weaker lock waits only for another writer of
    the list."""
    version = (software_version or "").strip()
    if version and version not in device.software_versions:
        if session.is_modified(device):
            # A version this transaction added and not written yet: the refresh would drop it.
            session.flush()
        session.refresh(device, with_for_update={"key_share": True})  # the list is read-modify-write
        if version not in device.software_versions:
            device.software_versions = sorted({*device.software_versions, version})


def ensure_devices(session: Session, identities: Iterable[DeviceIdentity]) -> None:
    """Create the machines of a batch that are new, in the order of their identity keys, before
    the batch locks any patient. A new row's unique key is held until the commit: two batches
    meeting a new machine in the middle of their patients would wait on each other in a circle,
    while here the second waits for the first without holding anything the first needs."""
    wanted = {device_values(i)["identity_key"]: i for i in identities}
    if not wanted:
        return
    known = _batch_devices(session)
    for device in session.scalars(select(Device).where(Device.identity_key.in_(list(wanted)))):
        known[device.identity_key] = device
    for key in sorted(k for k in wanted if k not in known):
        values = device_values(wanted[key])
        created = insert_unless_exists(session, Device, {**values, "software_versions": []}, ["identity_key"])
        if created is not None:
            known[key] = created


_BATCH = "dxa_batch_devices"


def _batch_devices(session: Session) -> dict[str, Device]:
    """identity key -> the machines `ensure_devices` read or created in the current transaction
    (outside any savepoint), so each file of the batch finds its machine without a query."""
    devices: dict[str, Device] = transaction_cache(session, _BATCH)
    return devices
