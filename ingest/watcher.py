"""Decide when a file in the watched folder is complete enough to claim.

Network shares (SMB, NFS) send no file events, so a periodic scan is the source of truth:
a file is ready when its size and mtime are unchanged over two scans and it is older than a
minimum age. Where the folder gives events (Linux inotify, `ingest.file_events`), a file its
writer has closed, or that was moved in whole, is ready at the first scan after that event (still
only once older than the minimum age): a burst need not wait a scan interval for its second scan.
Temporary names that scanners and copy tools use while writing (`*.part`, `*.tmp`, hidden
dotfiles such as rsync's `.name.XXXX`) are never claimed.

`ReadinessTracker` holds only that rule (no I/O, no clock: `now` is passed in);
`scan_folder` is the small I/O half that lists candidate files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

IGNORED_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".swp")


def is_ignored(name: str) -> bool:
    """Temp and hidden files. A name that starts with ".." (for example a URL-escaped
    "..%2f..%2fetc.dcm" written by a careless sender) is a real file, not a hidden one."""
    low = name.lower()
    if low.endswith(IGNORED_SUFFIXES):
        return True
    return name.startswith(".") and not name.startswith("..")


@dataclass(frozen=True)
class FileState:
    size: int
    mtime: float


RETRY_S = 30.0  # a file that could not be claimed waits this long before the next try, doubling
RETRY_MAX_S = 900.0  # up to this: a file that stays unreadable is tried four times an hour


class ReadinessTracker:
    """Which files are ready (stable over two scans and old enough), and which wait after a claim
    that failed (`failed`): a file that cannot be read would otherwise be tried, and logged, at every
    scan for ever. It waits `RETRY_S`, doubling up to `RETRY_MAX_S`, or until it changes (a sender
    writing it again, its permissions fixed by a copy) and then is ready at once."""

    def __init__(self, min_age_s: float, retry_s: float = RETRY_S, retry_max_s: float = RETRY_MAX_S) -> None:
        self._min_age_s = min_age_s
        self._retry_s = retry_s
        self._retry_max_s = retry_max_s
        self._last: dict[str, FileState] = {}
        self._given: dict[str, FileState] = {}  # the files the last `observe` returned as ready
        self._failed: dict[str, tuple[FileState, float, int]] = {}  # path -> (its state, retry at, failures)

    def observe(self, snapshot: dict[str, FileState], now: float, closed: Collection[str] = frozenset()) -> list[str]:
        """Feed one scan; return the paths that are ready: stable since the previous scan, or
        `closed` (their writer closed them, or they were moved in whole, and no event since says
        they are written again: `ingest.file_events.ClosedFiles`), and not waiting after a failed
        claim (`failed`)."""
        stable = [
            path
            for path, state in snapshot.items()
            if (path in closed or self._last.get(path) == state) and now - state.mtime >= self._min_age_s
        ]
        self._failed = {p: f for p, f in self._failed.items() if snapshot.get(p) == f[0]}  # changed: fresh
        ready = [path for path in stable if path not in self._failed or now >= self._failed[path][1]]
        self._last = {p: s for p, s in snapshot.items() if p not in ready}
        self._given = {p: snapshot[p] for p in ready}
        return sorted(ready)

    def forget(self, path: str) -> None:
        self._last.pop(path, None)
        self._failed.pop(path, None)

    def defer(self, paths: list[str]) -> None:
        """Files `observe` returned that are not claimed this time (the writer has enough): ready
        again at the next scan if they have not changed."""
        for path in paths:
            state = self._given.get(path)
            if state is not None:
                self._last[path] = state

    def failed(self, path: str, now: float) -> tuple[int, float]:
        """The claim of a file `observe` just returned failed: (failures so far, seconds until the
        next try unless it changes)."""
        state = self._given.get(path)
        if state is None:
            return 0, 0.0
        count = self._failed[path][2] + 1 if path in self._failed else 1
        wait = min(self._retry_max_s, self._retry_s * 2 ** (count - 1))
        self._failed[path] = (state, now + wait, count)
        self._last[path] = state  # still stable: ready again once the wait is over
        return count, wait


class OddEntries:
    """Inbox entries that are not regular files (symlinks, FIFOs, sockets, devices, empty folders):
    never opened, never followed, but never silently ignored either. Like `ReadinessTracker`, only
    the rule (no I/O, `now` passed in): an entry is `new` the first scan it is seen (to be logged
    and counted) and `persisting` once, when it has stayed `persist_s` (to get a QA entry and,
    for anything but a folder, be moved out of the inbox)."""

    def __init__(self, persist_s: float) -> None:
        self._persist_s = persist_s
        self._first_seen: dict[str, float] = {}
        self._reported: set[str] = set()

    def observe(self, odd: dict[str, str], now: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        new = [(path, kind) for path, kind in sorted(odd.items()) if path not in self._first_seen]
        for path, _ in new:
            self._first_seen[path] = now
        self._first_seen = {p: t for p, t in self._first_seen.items() if p in odd}
        self._reported &= set(odd)
        persisting = [
            (path, kind)
            for path, kind in sorted(odd.items())
            if path not in self._reported and now - self._first_seen[path] >= self._persist_s
        ]
        self._reported.update(path for path, _ in persisting)
        return new, persisting


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISDIR(mode):
        return None
    return "other"


def scan_inbox(root: Path) -> tuple[dict[str, FileState], dict[str, str]]:
    """(regular files ready to be tracked, other entries by kind). Only `lstat`: a symlink's target
    is never looked at, a FIFO never opened. Folders are read with `os.scandir` (what a directory
    entry says of its type costs no system call): the watcher scans the inbox several times a
    second, and folders a sender left empty stay in it (issue 13)."""
    files: dict[str, FileState] = {}
    odd: dict[str, str] = {}
    _scan_folder(str(root), True, files, odd)
    return files, odd


def _scan_folder(folder: str, top: bool, files: dict[str, FileState], odd: dict[str, str]) -> None:
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:  # gone meanwhile, or unreadable: as `os.walk`, skipped
        return
    if not entries and not top:
        odd[folder] = "empty_folder"
    for entry in entries:
        try:
            is_folder = entry.is_dir()  # a link to a folder counts as a folder, never entered
        except OSError:
            is_folder = False
        if is_folder:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                odd[entry.path] = "symlink"
            else:
                _scan_folder(entry.path, False, files, odd)
            continue
        if is_ignored(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        kind = _kind(st.st_mode)
        if kind is None:
            files[entry.path] = FileState(st.st_size, st.st_mtime)
        else:
            odd[entry.path] = kind


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular, non-ignored file below root (recursively, links not followed)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if is_ignored(name):
                continue
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def scan_folder(root: Path) -> dict[str, FileState]:
    return scan_inbox(root)[0]
