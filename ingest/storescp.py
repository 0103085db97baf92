"""DICOM Storage SCP: scanners push results here instead of writing to a share.

The handler does one thing: write the received object, as the sender encoded it, into the
watched inbox under a random name, and answer. Parsing, storage and evaluation happen in the
same pipeline as a dropped file, so a C-STORE can never bypass quarantine or duplicate
checks.

Only calling AE titles on the allow-list (`DXA_STORESCP_ALLOWED_AES`) may associate at all: any
other caller is rejected at association ("calling AE title not recognised") and logged with its
AE title and address (never anything from a dataset). The receiver's own AE title may associate
too, for the C-ECHO of a health check, but it may not store unless it is on the list. Up to
`DXA_STORESCP_MAX_ASSOCIATIONS` senders are served at once (pynetdicom's default is 10, too few for
a department whose scanners all send after the morning list).
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


def _calling_ae(event: Any) -> str:
    calling = event.assoc.requestor.ae_title
    return (calling.decode("ascii", "replace") if isinstance(calling, bytes) else str(calling)).strip()


def make_rejection_logger(allowed_ae_titles: Iterable[str], max_associations: int) -> Any:
    allowed = frozenset(t.strip() for t in allowed_ae_titles)

    def log_rejection(event: Any) -> None:
        calling = _calling_ae(event)
        address = f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"
        if calling in allowed:
            log.warning(
                "association from %r at %s refused: %d associations at once already "
                "(DXA_STORESCP_MAX_ASSOCIATIONS); the sender should retry",
                calling,
                address,
                max_associations,
            )
        else:
            log.warning(
                "association from %r at %s refused: calling AE title not on DXA_STORESCP_ALLOWED_AES", calling, address
            )

    return log_rejection


def make_store_handler(inbox: Path, allowed_ae_titles: Iterable[str]) -> Any:
    allowed = frozenset(t.strip() for t in allowed_ae_titles)

    def handle_store(event: Any) -> int:
        calling = _calling_ae(event)
        if calling not in allowed:
            log.warning("C-STORE from %r refused: calling AE title not on DXA_STORESCP_ALLOWED_AES", calling)
            return STATUS_NOT_AUTHORISED
        try:
            write_received(event, inbox)
        except OSError:
            log.exception("C-STORE could not be written to the intake")
            return STATUS_CANNOT_STORE
        return STATUS_SUCCESS

    return handle_store


def build_ae(ae_title: str, allowed_ae_titles: Iterable[str], max_associations: int) -> AE:
    ae = AE(ae_title=ae_title)
    for context in ACCEPTED_STORAGE:
        ae.add_supported_context(context)
    ae.add_supported_context(Verification)
    # Never empty (pynetdicom reads an empty list as "anyone"): the receiver's own title is there
    # for the health check's C-ECHO.
    ae.require_calling_aet = sorted({*(t.strip() for t in allowed_ae_titles if t.strip()), ae_title})
    ae.maximum_associations = max_associations
    return ae


def serve(
    inbox: Path,
    ae_title: str,
    host: str,
    port: int,
    allowed_ae_titles: Iterable[str],
    block: bool = True,
    max_associations: int = 64,
) -> Any:
    """Start the SCP. With block=False the server runs in a thread and is returned (tests)."""
    quiet_pynetdicom()
    allowed = [t.strip() for t in allowed_ae_titles if t.strip()]
    ae = build_ae(ae_title, allowed, max_associations)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, make_store_handler(inbox, allowed)),
        (evt.EVT_REJECTED, make_rejection_logger(allowed, max_associations)),
    ]
    log.info(
        "DICOM receiver %s listening on %s:%d, %d calling AE titles allowed, up to %d associations",
        ae_title,
        host,
        port,
        len(allowed),
        max_associations,
    )
    return ae.start_server((host, port), block=block, evt_handlers=handlers)


def echo(host: str, port: int, called_ae: str, calling_ae: str, timeout_s: float = 5.0) -> bool:
    """C-ECHO a receiver (the health check of `dxa storescp`): True when it answered Success."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == STATUS_SUCCESS
    finally:
        assoc.release()
