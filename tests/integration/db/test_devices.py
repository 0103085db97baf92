"""A machine's software versions: every version a transaction meets is kept, and recording one
does not wait for the transactions that merely stored exams of the machine (issue 13: two
workers' batches deadlocked there)."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import Engine, select, text

from db.devices import find_or_create_device, record_software_version
from db.engine import session_factory
from db.models import Device
from db.reports import store_report
from tests.integration.db.helpers import HOLOGIC, SPINE, report


def test_several_versions_met_in_one_transaction_are_all_kept(engine: Engine) -> None:
    sessions = session_factory(engine)
    with sessions.begin() as session:
        device = find_or_create_device(session, HOLOGIC)
        record_software_version(session, device, "14.0")
        record_software_version(session, device, "15.1")
    with sessions() as session:
        assert session.scalars(select(Device.software_versions)).one() == ["13.6.0.5", "14.0", "15.1"]


@pytest.mark.postgres
def test_a_new_version_does_not_wait_for_a_transaction_storing_an_exam_of_the_machine(postgres_url: str) -> None:
    """An exam's foreign key holds `FOR KEY SHARE` on its machine's row until its transaction ends;
    a second transaction recording a version new to the machine must not wait for it (each
    waiting for the other was a deadlock between two workers' batches)."""
    from db.engine import make_engine
    from tests.conftest import clear_tables

    engine = make_engine(postgres_url)
    clear_tables(engine)
    sessions = session_factory(engine)
    try:
        with sessions.begin() as session:
            find_or_create_device(session, HOLOGIC)
        with sessions() as storing, sessions() as other:
            store_report(storing, report(*SPINE, device=HOLOGIC))  # its exam refers to the machine
            storing.flush()
            other.execute(text("SET LOCAL lock_timeout = '3s'"))  # waiting would fail here
            device = find_or_create_device(other, dataclasses.replace(HOLOGIC, software_version="16.0"))
            other.commit()
            storing.commit()
            assert "16.0" in device.software_versions
        with sessions() as session:
            assert session.scalars(select(Device.software_versions)).one() == ["13.6.0.5", "16.0"]
    finally:
        engine.dispose()
