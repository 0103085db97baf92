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
from collections import deque
from collections.abc import Callable, Collection, Iterator
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
        self._deferred: deque[tuple[str, FileState]] = deque()  # ready, not claimed yet (`defer`), oldest first

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
        self._given = {p: snapshot[p] for p in ready}
        self._deferred.clear()  # this scan saw them again
        # `_given` is the membership test: `p not in ready` (a list) made a scan of a 100 000-file
        # inbox quadratic (minutes of one core, the writer starved meanwhile).
        self._last = {p: s for p, s in snapshot.items() if p not in self._given}
        return sorted(ready)

    def forget(self, path: str) -> None:
        self._last.pop(path, None)
        self._failed.pop(path, None)

    def defer(self, paths: list[str]) -> None:
        """Files `observe` returned that are not claimed this time (the writer has enough): given
        by `take_deferred` without another scan, or ready again at the next scan if they have not
        changed."""
        for path in paths:
            state = self._given.get(path)
            if state is not None:
                self._last[path] = state
                self._deferred.append((path, state))

    @property
    def deferred(self) -> int:
        return len(self._deferred)

    def take_deferred(self, limit: int) -> list[tuple[str, FileState]]:
        """Up to `limit` deferred files, oldest first, with the state they were ready in: the caller
        claims those still in that state (one `lstat` each) rather than list the inbox again. A
        hospital's archive dropped at once (100 000 files) is then listed a few times, not once per
        thousand files claimed (issue 13). They count as given (`failed`, `forget`) until the next
        `observe` or `take_deferred`."""
        taken = [self._deferred.popleft() for _ in range(min(limit, len(self._deferred)))]
        self._given = dict(taken)
        for path, _ in taken:
            self._last.pop(path, None)
        return taken

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
        # Only what is new or waits is sorted: an inbox can hold thousands of folders left empty,
        # seen at every scan (issue 13).
        new = sorted((path, kind) for path, kind in odd.items() if path not in self._first_seen)
        for path, _ in new:
            self._first_seen[path] = now
        if len(self._first_seen) > len(odd):  # some are gone
            self._first_seen = {p: t for p, t in self._first_seen.items() if p in odd}
            self._reported &= odd.keys()
        persisting = sorted(
            (path, kind)
            for path, kind in odd.items()
            if path not in self._reported and now - self._first_seen[path] >= self._persist_s
        )
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
    pending = [(str(root), True)]
    while pending:
        folder, top = pending.pop()
        folders: list[str] = []
        _scan_folder(folder, top, files, odd, folders)
        pending.extend((sub, False) for sub in folders)
    return files, odd


def _scan_folder(folder: str, top: bool, files: dict[str, FileState], odd: dict[str, str], folders: list[str]) -> bool:
    """One folder's entries into `files` and `odd`, the folders inside it (to be entered) into
    `folders`; False when it could not be listed (gone meanwhile, or unreadable: as `os.walk`,
    skipped)."""
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:
        return False
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
                folders.append(entry.path)
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
    return True


@dataclass
class _Listed:
    """One folder as last listed: its regular files (and their state then), its other entries, the
    folders inside it, and its own mtime then (`trusted`: old enough that a change made in the same
    tick of the clock as the listing cannot hide behind it)."""

    mtime_ns: int
    trusted: bool
    files: dict[str, FileState]
    odd: dict[str, str]
    folders: list[str]


SETTLED_S = 2.0  # a folder's mtime older than its listing by this is trusted to change with its names
FULL_LIST_S = 60.0  # every folder listed again this often all the same (a share that hides a change)


class InboxListing:
    """`scan_inbox` that remembers each folder's listing and lists again only the folders that may
    have changed: a sender's archive leaves thousands of folders in the inbox, empty once their files
    are claimed, and listing each one at every scan took a core (issue 13: ~29 000 empty folders, a
    scan of them 0.5-0.8 s under load). A folder is taken as unchanged when `unchanged(folder)` says
    so (inotify saw no event in it since it was listed: no system call at all), or else when its
    mtime (one `stat`) is the one it had when listed and was old enough then (`SETTLED_S`); its files'
    states are then read again (`lstat`) unless inotify vouches for them. Every folder is listed
    again every `FULL_LIST_S`. Not thread-safe: the watcher's thread only."""

    def __init__(self, root: Path, full_list_s: float = FULL_LIST_S) -> None:
        self._root = str(root)
        self._full_list_s = full_list_s
        self._cache: dict[str, _Listed] = {}
        self._full_at = 0.0
        self.listed = 0  # folders listed (opened and read) by the last scan

    def scan(
        self, now: float, unchanged: Callable[[str], bool] | None = None
    ) -> tuple[dict[str, FileState], dict[str, str]]:
        if now - self._full_at >= self._full_list_s:
            self._cache, self._full_at = {}, now
        files: dict[str, FileState] = {}
        odd: dict[str, str] = {}
        fresh: dict[str, _Listed] = {}
        self.listed = 0
        pending = [(self._root, True)]
        while pending:
            folder, top = pending.pop()
            listed = self._folder(folder, top, now, unchanged)
            if listed is None:
                continue
            fresh[folder] = listed
            files.update(listed.files)
            odd.update(listed.odd)
            pending.extend((sub, False) for sub in listed.folders)
        self._cache = fresh  # folders gone are forgotten
        return files, odd

    def _folder(self, folder: str, top: bool, now: float, unchanged: Callable[[str], bool] | None) -> _Listed | None:
        cached = self._cache.get(folder)
        if cached is not None and unchanged is not None and unchanged(folder):
            return cached
        try:
            mtime_ns = os.stat(folder, follow_symlinks=False).st_mtime_ns
        except OSError:  # gone meanwhile
            return None
        if cached is not None and cached.trusted and cached.mtime_ns == mtime_ns:
            files = _restat(cached.files)
            if files is not None:
                return _Listed(mtime_ns, True, files, cached.odd, cached.folders)
        self.listed += 1
        listed = _Listed(mtime_ns, now - mtime_ns / 1e9 >= SETTLED_S, {}, {}, [])
        if not _scan_folder(folder, top, listed.files, listed.odd, listed.folders):
            return None
        return listed


def _restat(states: dict[str, FileState]) -> dict[str, FileState] | None:
    """The files' states now; None when one is not a regular file any more (the folder is listed)."""
    out: dict[str, FileState] = {}
    for path in states:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        out[path] = FileState(st.st_size, st.st_mtime)
    return out


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
