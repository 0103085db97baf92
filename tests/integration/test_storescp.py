"""The DICOM receiver: an allowed scanner's C-STORE lands in the inbox unchanged; any other
calling AE title is refused at association, with a log line naming it; 50 senders at once are all
served; the health check's C-ECHO answers. Real associations over loopback."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import EnhancedSRStorage  # type: ignore[attr-defined]

from ingest.parse import ParseLimits, parse_file
from ingest.storescp import echo, serve

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "single" / "ge_sr" / "idxa_ap_spine_sr.dcm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    server: Any = serve(tmp_path / "inbox", "DXAMONITOR", "127.0.0.1", port, ["LUNAR1", "HOLOGIC2"], block=False)
    try:
        yield port, tmp_path / "inbox"
    finally:
        server.shutdown()


def associate(port: int, calling: str) -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(EnhancedSRStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    return ae.associate("127.0.0.1", port, ae_title="DXAMONITOR")


def store(port: int, calling: str) -> int:
    assoc = associate(port, calling)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(pydicom.dcmread(SAMPLE))
        return int(status.Status)
    finally:
        assoc.release()


def test_allowed_store_lands_in_the_inbox_and_parses(scp: tuple[int, Path]) -> None:
    port, inbox = scp
    assert store(port, "LUNAR1") == 0x0000
    files = list((inbox / "storescp").glob("*.dcm"))
    assert len(files) == 1 and not list(inbox.rglob("*.part"))
    report = parse_file(files[0].read_bytes(), files[0].name, ParseLimits())
    original = parse_file(SAMPLE.read_bytes(), SAMPLE.name, ParseLimits())
    assert report.measurements == original.measurements
    assert report.sop_instance_uid == original.sop_instance_uid


def test_unknown_calling_ae_is_rejected_at_association_and_logged(
    scp: tuple[int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    port, inbox = scp
    with caplog.at_level(logging.WARNING, logger="ingest.storescp"):
        assoc = associate(port, "INTRUDER")
        assert assoc.is_rejected and not assoc.is_established
        assert not echo("127.0.0.1", port, "DXAMONITOR", "INTRUDER")
    assert not list(inbox.rglob("*.dcm"))
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and all("'INTRUDER'" in m and "DXA_STORESCP_ALLOWED_AES" in m for m in refusals)


def test_health_check_echo_answers_but_may_not_store(scp: tuple[int, Path]) -> None:
    port, inbox = scp
    assert echo("127.0.0.1", port, "DXAMONITOR", "DXAMONITOR")
    assert store(port, "DXAMONITOR") != 0x0000
    assert not list(inbox.rglob("*.dcm"))


def test_fifty_simultaneous_senders_are_all_served(scp: tuple[int, Path]) -> None:
    """Every association is opened before any is released: 50 held at once (pynetdicom's
    default limit of 10 fails this)."""
    port, inbox = scp
    count = 50
    opened = threading.Barrier(count, timeout=120)
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def sender(i: int) -> None:
        try:
            assoc = associate(port, "LUNAR1" if i % 2 else "HOLOGIC2")
            established = assoc.is_established
            opened.wait()  # a refused sender still waits, so the others stay open together
            if not established:
                raise AssertionError("association refused")
            status = int(assoc.send_c_store(pydicom.dcmread(SAMPLE)).Status)
            assoc.release()
            with lock:
                statuses.append(status)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors[:3]
    assert statuses == [0x0000] * count
    assert len(list((inbox / "storescp").glob("*.dcm"))) == count
