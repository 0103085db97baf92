"""The DICOM receiver: an allowed scanner's C-STORE lands in the inbox unchanged; any other
calling AE title is refused; C-ECHO answers. Real associations over loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import EnhancedSRStorage, Verification  # type: ignore[attr-defined]

from ingest.parse import ParseLimits, parse_file
from ingest.storescp import STATUS_NOT_AUTHORISED, serve

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "single" / "ge_sr" / "idxa_ap_spine_sr.dcm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    server: Any = serve(tmp_path / "inbox", "DXAMONITOR", "127.0.0.1", port, ["LUNAR1"], block=False)
    try:
        yield port, tmp_path / "inbox"
    finally:
        server.shutdown()


def store(port: int, calling: str) -> int:
    ae = AE(ae_title=calling)
    ae.add_requested_context(EnhancedSRStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate("127.0.0.1", port, ae_title="DXAMONITOR")
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


def test_unknown_calling_ae_is_refused_and_nothing_written(scp: tuple[int, Path]) -> None:
    port, inbox = scp
    assert store(port, "INTRUDER") == STATUS_NOT_AUTHORISED
    assert not list(inbox.rglob("*.dcm"))


def test_echo_answers(scp: tuple[int, Path]) -> None:
    port, _ = scp
    ae = AE(ae_title="ANY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DXAMONITOR")
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == 0
    assoc.release()
