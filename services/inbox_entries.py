"""What happens to inbox entries that are not regular files (symlinks, FIFOs, sockets, devices,
empty folders): a refusal that is logged and counted when first seen and, once the entry has
stayed, a QA entry (an audit event) and a move out of the inbox into
`quarantine/not_a_regular_file/`. An empty folder is only counted and logged: nothing was sent,
and a sender may keep its folders ready (each empties whenever its last file is claimed).

Entry names are never logged or stored: a sender's file name often carries the patient's name.
An entry is named by the first 12 hex digits of the SHA-256 of its path below the inbox, which
lets QA match repeated reports of one entry without saying what it was called. A symlink is moved
as a link (rename), so its target is never read; a FIFO is never opened.

A regular file the watcher claimed but could not read (an input/output error, a permission; a pipe
swapped in after the scan) gets the same kind of outcome at once (`set_aside_unreadable`): given
back to the inbox it would be claimed and fail again at every scan, for ever. It is moved from
work/ to `quarantine/read_error/` with a sidecar, logged and recorded for QA, who can drop it
again once it reads. One that cannot even be claimed (an inbox on another volume is copied, and
the copy cannot read it) stays in the inbox: the watcher tries it again after a wait that doubles
(`ingest.watcher.ReadinessTracker.failed`), and records it for QA at its `RECORD_AFTER`th failure
(`record_unclaimable`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import threading
import uuid
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

RECORD_AFTER = 3  # failed claims of one file before it is recorded for QA (once)
READ_ERROR = "read_error"  # quarantine/<this>/: files claimed from the inbox that could not be read

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


def set_aside_unreadable(ctx: Context, inbox_path: Path, work_path: Path, words: str) -> str | None:
    """A file claimed from the inbox into work/ whose bytes could not be read (`words`: why, no
    path): moved to `quarantine/read_error/<random>.<ext>` with a sidecar, counted, logged by its
    entry id and recorded for QA. Where it is now (below quarantine/), or None when it could not
    be moved (it then stays in work/, where the next start-up's recovery looks at it again)."""
    from services.files import move_durably, safe_extension

    ident = entry_id(ctx.settings.inbox_dir, str(inbox_path))
    folder = ctx.settings.quarantine_dir / READ_ERROR
    reason = f"the file could not be read: {words}. Check the file and drop it into the inbox again"
    moved: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{uuid.uuid4().hex}{safe_extension(inbox_path.name)}"
        sidecar = {
            "reason_code": READ_ERROR,
            "reason": reason,
            "entry": ident,
            "quarantined_at": datetime.now(UTC).isoformat(),
        }
        dest.with_name(dest.name + ".json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
        move_durably(work_path, dest)
        moved = str(dest.relative_to(ctx.settings.quarantine_dir))
    except OSError as exc:
        log.warning("inbox: entry %s could not be moved aside (%s)", ident, type(exc).__name__)
    try:
        _record_unreadable(ctx, ident, reason, moved)
    except Exception as exc:  # the file is set aside all the same; the log line below says so
        log.warning("inbox: the QA record of entry %s could not be written (%s)", ident, type(exc).__name__)
    log.warning("inbox: entry %s could not be read (%s); %s", ident, words, "set aside for QA" if moved else "left")
    return moved


def record_unclaimable(ctx: Context, inbox_path: Path, words: str) -> None:
    """A file of the inbox whose claim failed `RECORD_AFTER` times (`words`: why, no path): a QA
    record; the file stays where it is, and is tried again (`ingest.watcher.ReadinessTracker`)."""
    ident = entry_id(ctx.settings.inbox_dir, str(inbox_path))
    reason = f"the file could not be taken from the inbox: {words}. It stays there and is tried again"
    _record_unreadable(ctx, ident, reason, None)


def _record_unreadable(ctx: Context, ident: str, reason: str, moved: str | None) -> None:
    """Count an unreadable inbox entry and write its QA record (`moved`: where it was set aside)."""
    with _lock:
        refused_total.update(["unreadable"])
    with ctx.sessions.begin() as session:
        session.add(
            AuditEvent(
                actor="system",
                action="inbox_entry_refused",
                detail={"kind": "unreadable", "entry": ident, "reason": reason, "moved": moved},
            )
        )
