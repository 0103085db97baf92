"""Moving a file through work/ → archive/ or quarantine/ without ever losing it.

Every move is a rename on one volume (atomic) or, across volumes, a copy that is flushed to
disk before the original is removed. Names on disk are built from the SHA-256 and a
whitelisted extension only: a received name or UID is never trusted as a path, and no
patient data ends up in a file or folder name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
import unicodedata
import uuid
from datetime import date
from pathlib import Path
from typing import Any

_SAFE_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_SAFE_CODE = re.compile(r"[^a-z0-9_]+")


class UnreadableSource(OSError):
    """The file to be copied could not be read (its errno says why: EACCES, ENOENT, EIO…), as
    opposed to work/ refusing the copy (a full disk: not the file's fault, which stops a back-load).
    The message holds no path."""


class NotARegularFile(UnreadableSource):
    """What was to be read is a named pipe, socket, device or folder (swapped in after a scan, or
    named on the command line): never opened for reading, where a pipe would block for ever. The
    message names the kind only, never the path."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file ({kind})")
        self.kind = kind


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "not a file"


def read_error_words(exc: OSError) -> str:
    """Why a file could not be read, in plain words for an operator, never its path (an OSError's
    text quotes the file name, which often carries the patient's name)."""
    if isinstance(exc, NotARegularFile):
        return f"not a regular file: a {exc.kind}" if exc.kind != "not a file" else "not a regular file"
    if isinstance(exc, shutil.SpecialFileError):
        return "not a regular file"
    if exc.errno is None:
        return type(exc).__name__
    words = {
        errno.ENOENT: "no such file (moved or deleted before it could be read)",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EIO: "input/output error (the disk or network share failed to read it)",
        errno.EISDIR: "a folder, not a file",
        errno.ELOOP: "a symbolic link that points to itself",
        errno.ENAMETOOLONG: "the name is too long",
        errno.ESTALE: "stale network file handle (the share was remounted)",
    }
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{words.get(exc.errno) or os.strerror(exc.errno).lower()} ({name})"


def open_regular(path: Path) -> io.BufferedReader:
    """Open a regular file for reading, in bounded time: opened without blocking (a named pipe would
    otherwise wait for a writer), then refused unless it is a regular file (`NotARegularFile`)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(_kind(mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_extension(name: str) -> str:
    """ ".dcm", ".pdf", … or "" — never anything with a separator or odd character."""
    suffix = Path(name.replace("\\", "/")).suffix.lower().lstrip(".")
    return f".{suffix}" if _SAFE_EXT.match(suffix) else ""


def display_name(name: str) -> str:
    """A received name as text for the database and the QA page: last path component only,
    control characters removed, length bounded. Never used to build a path."""
    text = unicodedata.normalize("NFC", name).replace("\\", "/").split("/")[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    return text[:200] or "(unnamed)"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush_folder(path: Path) -> None:
    """Make the names created in a folder durable, once for many files (a back-load's chunk of
    copies, `services.backload`)."""
    _fsync_dir(path)


def move_durably(src: Path, dest: Path) -> Path:
    """Rename src to dest; across volumes copy, fsync, then unlink the source."""
    _move(src, dest)
    _fsync_dir(dest.parent)
    return dest


def _move(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dest.with_name(dest.name + ".partial")
        _copy_flushed(src, tmp)
        os.replace(tmp, dest)
        src.unlink()


def _copy_flushed(src: Path, tmp: Path) -> None:
    """Copy a regular file's bytes to `tmp`, flushed to disk. A copy that fails (the source cannot
    be read: EIO, permission, gone, not a regular file) leaves no `tmp` behind: the source is where
    it was, and a cut copy in work/ would be litter nobody registers."""
    try:
        fin = open_regular(src)
    except UnreadableSource:
        raise
    except OSError as exc:
        raise UnreadableSource(exc.errno, exc.strerror) from exc
    try:
        with fin, tmp.open("wb") as fout:
            while True:
                try:
                    block = fin.read(1 << 16)
                except OSError as exc:
                    raise UnreadableSource(exc.errno, exc.strerror) from exc
                if not block:
                    break
                fout.write(block)
            fout.flush()
            os.fsync(fout.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Moves:
    """Several moves made durable together: each renamed at once, each destination folder flushed
    once at the end (`sync`), rather than one directory fsync per file. Until `sync` returns a
    crash may undo a rename; the rows already say where each file goes, so recovery
    (`services.recovery.recover_files`) finishes it."""

    def __init__(self) -> None:
        self.folders: set[Path] = set()

    def move(self, src: Path, dest: Path) -> Path:
        _move(src, dest)
        self.folders.add(dest.parent)
        return dest

    def sync(self) -> None:
        for folder in sorted(self.folders):
            _fsync_dir(folder)
        self.folders.clear()


def new_work_path(work_dir: Path, original_name: str) -> Path:
    return work_dir / f"{uuid.uuid4().hex}{safe_extension(original_name)}"


def claim_by_rename(src: Path, work_dir: Path, moves: Moves | None = None) -> Path:
    """Take a file out of the inbox: once renamed, the watcher can never see it twice. With
    `moves`, work/ is flushed once for the whole scan (`Moves.sync`) before the claims are
    registered."""
    dest = new_work_path(work_dir, src.name)
    return moves.move(src, dest) if moves is not None else move_durably(src, dest)


def claim_by_copy(src: Path, work_dir: Path, owner: str = "") -> Path:
    """Back-loading (`dxa ingest`) leaves the user's archive untouched: copy, then flush. With
    `owner` ("host:pid", `services.outcomes.worker_name`), the copy under way names its process,
    so that one a kill cut short can be told from one still being written (`cut_copies`)."""
    dest = new_work_path(work_dir, src.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + (f"{_OWNER}{owner}" if owner else "") + ".partial")
    _copy_flushed(src, tmp)
    os.replace(tmp, dest)
    return dest


_OWNER = "~"  # between a copy's name and its owner's: in neither a work name nor a host name


def cut_copies(work_dir: Path) -> list[tuple[Path, str]]:
    """The copies under way in work/ that name their owner (`claim_by_copy`): (path, owner). The
    caller removes those whose owner is gone: never registered, their original is still where it
    was copied from."""
    if not work_dir.is_dir():
        return []
    out = []
    for path in work_dir.iterdir():
        name, sep, owner = path.name.removesuffix(".partial").rpartition(_OWNER)
        if path.name.endswith(".partial") and sep and name and owner:
            out.append((path, owner))
    return out


def archive_path(archive_dir: Path, sha256: str, original_name: str, when: date) -> Path:
    return archive_dir / f"{when:%Y}" / f"{when:%m}" / f"{sha256}{safe_extension(original_name)}"


def quarantine_code(code: str) -> str:
    return _SAFE_CODE.sub("_", code.lower()).strip("_") or "unknown"


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".json")


def write_sidecar(dest: Path, sidecar: dict[str, Any]) -> None:
    """The reason beside a quarantined file. Written before the file is moved, so a process killed
    mid-write leaves the file in work/, where recovery finds it and rewrites a cut sidecar
    (`readable_sidecar`). No temporary name: one left by a kill would itself be litter."""
    sidecar_path(dest).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def readable_sidecar(dest: Path) -> bool:
    """A sidecar is there and holds a whole JSON object, not one cut by a killed process."""
    try:
        return isinstance(json.loads(sidecar_path(dest).read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def quarantine_file(
    work_path: Path, quarantine_dir: Path, code: str, sidecar: dict[str, Any], moves: Moves | None = None
) -> Path:
    """Move into quarantine/<code>/ and write the reason beside it (sidecar first, so a
    crash between the two leaves a reason that points at a file still in work/). With `moves`,
    the folder is flushed with the others of the batch."""
    folder = quarantine_dir / quarantine_code(code)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{sidecar.get('sha256') or uuid.uuid4().hex}{work_path.suffix}"
    write_sidecar(dest, sidecar)
    return moves.move(work_path, dest) if moves is not None else move_durably(work_path, dest)
