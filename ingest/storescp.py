"""DICOM Storage SCP: scanners push results here instead of writing to a share.

The handler does one thing: write the received object, as the sender encoded it, into the
watched inbox under a random name, and answer. Parsing, storage and evaluation happen in the
same pipeline as a dropped file, so a C-STORE can never bypass quarantine or duplicate
checks. Only calling AE titles on the allow-list may store; anyone may C-ECHO.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    EnhancedSRStorage,
    SecondaryCaptureImageStorage,
    Verification,
)

ACCEPTED_STORAGE = (EnhancedSRStorage, ComprehensiveSRStorage, SecondaryCaptureImageStorage, EncapsulatedPDFStorage)
STATUS_SUCCESS = 0x0000
STATUS_NOT_AUTHORISED = 0xA700  # "Refused: out of resources" is the closest standard refusal
STATUS_CANNOT_STORE = 0xA701

log = logging.getLogger(__name__)


def quiet_pynetdicom() -> None:
    """pynetdicom logs identifiers (patient name, ID) at debug/info level: keep it to warnings."""
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def write_received(event: Any, inbox: Path) -> Path:
    """Write the object as received (preamble + file meta + encoded dataset) atomically:
    the `.part` name is ignored by the watcher until the final rename."""
    folder = inbox / "storescp"
    folder.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    tmp = folder / f"{name}.dcm.part"
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = DicomBytesIO()
    write_file_meta_info(meta, event.file_meta, enforce_standard=True)
    with tmp.open("wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        fh.write(meta.getvalue())
        fh.write(event.request.DataSet.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    final = folder / f"{name}.dcm"
    os.replace(tmp, final)
    return final


def make_store_handler(inbox: Path, allowed_ae_titles: Iterable[str]) -> Any:
    allowed = frozenset(t.strip() for t in allowed_ae_titles)

    def handle_store(event: Any) -> int:
        calling = event.assoc.requestor.ae_title
        calling = calling.decode("ascii", "replace") if isinstance(calling, bytes) else str(calling)
        if calling.strip() not in allowed:
            log.warning("C-STORE refused: calling AE title not on the allow-list")
            return STATUS_NOT_AUTHORISED
        try:
            write_received(event, inbox)
        except OSError:
            log.exception("C-STORE could not be written to the intake")
            return STATUS_CANNOT_STORE
        return STATUS_SUCCESS

    return handle_store


def build_ae(ae_title: str) -> AE:
    ae = AE(ae_title=ae_title)
    for context in ACCEPTED_STORAGE:
        ae.add_supported_context(context)
    ae.add_supported_context(Verification)
    return ae


def serve(
    inbox: Path, ae_title: str, host: str, port: int, allowed_ae_titles: Iterable[str], block: bool = True
) -> Any:
    """Start the SCP. With block=False the server runs in a thread and is returned (tests)."""
    quiet_pynetdicom()
    ae = build_ae(ae_title)
    handlers: list[Any] = [(evt.EVT_C_STORE, make_store_handler(inbox, allowed_ae_titles))]
    return ae.start_server((host, port), block=block, evt_handlers=handlers)
