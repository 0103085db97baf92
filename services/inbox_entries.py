"""What happens to inbox entries that are not regular files (symlinks, FIFOs, sockets, devices,
empty folders): a refusal that is logged and counted when first seen and, once the entry has
stayed, a QA entry (an audit event) and a move out of the inbox into
`quarantine/not_a_regular_file/`. An empty folder is only counted and logged: nothing was sent,
and a sender may keep its folders ready (each empties whenever its last file is claimed).

Entry names are never logged or stored: a sender's file name often carries the patient's name.
An entry is named by the first 12 hex digits of the SHA-256 of its path below the inbox, which
lets QA match repeated reports of one entry without saying what it was called. A symlink is moved
as a link (rename), so its target is never read; a FIFO is never opened.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from db.models import AuditEvent
from services.context import Context
from settings import Settings

log = logging.getLogger("dxa.inbox")

FOLDER = "not_a_regular_file"
REASON = {
    "symlink": "a symbolic link (its target is never read: copy the file itself into the inbox)",
    "fifo": "a named pipe (FIFO), not a file",
    "socket": "a socket, not a file",
    "device": "a device node, not a file",
    "other": "an entry that is not a regular file",
    "empty_folder": "an empty folder (left in place, counted only: senders may keep folders ready)",
}

_lock = threading.Lock()
refused_total: Counter[str] = Counter()  # per kind, since the process started (tests, the soak)


def persist_s(settings: Settings) -> float:
    """How long an odd entry may stay before it gets a QA entry and is moved: long enough for a
    copy tool that briefly makes a link or a pipe, short enough for QA to see it the same day."""
    return max(60.0, 10 * settings.scan_interval_s, 5 * settings.min_file_age_s)


def entry_id(inbox: Path, path: str) -> str:
    rel = os.path.relpath(path, inbox)
    return hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def refuse(ctx: Context, inbox: Path, new: list[tuple[str, str]], persisting: list[tuple[str, str]]) -> None:
    if new:
        kinds = Counter(kind for _, kind in new)
        with _lock:
            refused_total.update(kinds)
        # Folders empty themselves each time their last file is claimed: not worth a warning.
        level = logging.INFO if set(kinds) == {"empty_folder"} else logging.WARNING
        log.log(
            level,
            "inbox: %d entr%s not a regular file, refused (%s)",
            len(new),
            "y is" if len(new) == 1 else "ies are",
            ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())),
        )
    for path, kind in persisting:
        if kind == "empty_folder":  # nothing was sent, nothing can be lost: the first log line is enough
            continue
        ident = entry_id(inbox, path)
        moved = None if kind == "empty_folder" else _move_aside(ctx.settings.quarantine_dir, path, kind, ident)
        with ctx.sessions.begin() as session:
            session.add(
                AuditEvent(
                    actor="system",
                    action="inbox_entry_refused",
                    detail={"kind": kind, "entry": ident, "reason": REASON.get(kind, REASON["other"]), "moved": moved},
                )
            )
        log.warning("inbox: entry %s (%s) stayed; recorded for QA%s", ident, kind, ", moved aside" if moved else "")


def _move_aside(quarantine_dir: Path, path: str, kind: str, ident: str) -> str | None:
    """Rename the entry itself (never what it points to) into quarantine; None when it cannot be
    (gone already, or a socket or device on another volume: then it stays, recorded). Across
    volumes a symlink is made again from its text (`readlink`, which reads the link, never its
    target) and a FIFO is made again, then the original is removed."""
    folder = quarantine_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    dest = folder / f"{ident}-{stamp}.{kind}"
    try:
        try:
            os.rename(path, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV or kind not in ("symlink", "fifo"):
                raise
            if kind == "symlink":
                os.symlink(os.readlink(path), dest)
            else:
                os.mkfifo(dest)
            os.unlink(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EXDEV):
            log.warning("inbox: entry %s could not be moved aside (%s)", ident, type(exc).__name__)
        return None
    sidecar = {"reason_code": FOLDER, "reason": REASON.get(kind, REASON["other"]), "entry": ident, "kind": kind}
    dest.with_name(dest.name + ".json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    return str(dest.relative_to(quarantine_dir))
