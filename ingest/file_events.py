"""Linux inotify, where the watched folder gives events: the files a writer has closed, or that
were moved in whole, known as soon as it happens rather than at the second of two scans
(`ingest.watcher.ReadinessTracker`; issue 13: a burst waited a whole scan interval before its
first file could be claimed).

A file counts as closed from its last `close_write` or `moved_to` event until an event says it is
being written again (`modify`) or is gone (moved away, deleted). Network shares (SMB, NFS) and
other kernels send no events: there, and for any file whose events were missed (created in a
folder before its watch was added, a queue overflow), the two-scan rule stays the source of
truth. Only the standard library (ctypes over libc).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ingest.watcher import is_ignored

_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_ONLYDIR = 0x01000000
_IN_DONT_FOLLOW = 0x02000000
_IN_ISDIR = 0x40000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_MASK = (
    _IN_MODIFY
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
    | _IN_DONT_FOLLOW
)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
MIN_GAP_S = 0.05  # between two scans woken by events: a burst's files are claimed in a few scans, not one each


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


class ClosedFiles:
    """The files below `root` known closed by their events (`closed`), kept up to date by `drain`.
    `open` gives None where inotify is not available (another kernel, no instance left): the caller
    then relies on scans alone. Not thread-safe: the watcher's thread only."""

    def __init__(self, libc: ctypes.CDLL, fd: int, root: Path) -> None:
        self._libc = libc
        self._fd = fd
        self._dirs: dict[int, str] = {}  # watch descriptor -> folder
        self._watched: set[str] = set()  # the folders of `_dirs`
        self._dirty: set[str] = set()  # folders with an event (or a new watch) since `unchanged_folders`
        self._all_dirty = True  # events were lost (or none taken yet): any folder may have changed
        self.closed: set[str] = set()
        self._add_tree(str(root))

    @classmethod
    def open(cls, root: Path) -> ClosedFiles | None:
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return None
        try:
            return cls(libc, fd, root)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _add_tree(self, folder: str) -> None:
        """Watch `folder` and the folders below it (not hidden ones, never through a link), as the
        scan enters them. A folder that cannot be watched (the watch limit) is left to the scans."""
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), _MASK)
        if wd < 0:
            return
        self._dirs[wd] = folder
        self._watched.add(folder)
        self._dirty.add(folder)  # what it held before its watch made no events: listed once more
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            return
        for entry in entries:
            with contextlib.suppress(OSError):
                if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                    self._add_tree(entry.path)

    def drain(self) -> set[str]:
        """Read the events waiting; the paths that became closed (and still are)."""
        became: set[str] = set()
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return became
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return became
            if not data:
                return became
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size : offset + _HEADER.size + length].split(b"\0", 1)[0]
                offset += _HEADER.size + length
                self._event(wd, mask, os.fsdecode(raw), became)

    def _event(self, wd: int, mask: int, name: str, became: set[str]) -> None:
        if mask & _IN_Q_OVERFLOW:  # events were lost: none of the marks can be trusted
            self.closed.clear()
            became.clear()
            self._all_dirty = True
            return
        if mask & _IN_IGNORED:
            gone = self._dirs.pop(wd, None)
            if gone is not None:
                self._watched.discard(gone)
            return
        folder = self._dirs.get(wd)
        if folder is not None:
            self._dirty.add(folder)
        if folder is None or not name:
            return
        path = os.path.join(folder, name)
        if is_ignored(name) and not mask & _IN_ISDIR:  # temporary names are never claimed
            return
        if mask & _IN_ISDIR:
            if mask & (_IN_CREATE | _IN_MOVED_TO) and not name.startswith("."):
                self._add_tree(path)
            return
        if mask & (_IN_CLOSE_WRITE | _IN_MOVED_TO):
            self.closed.add(path)
            became.add(path)
        elif mask & (_IN_MODIFY | _IN_MOVED_FROM | _IN_DELETE):
            self.closed.discard(path)
            became.discard(path)

    def unchanged_folders(self) -> Callable[[str], bool]:
        """Whether a folder had no event since the last call (its listing then still holds), for
        `ingest.watcher.InboxListing.scan`: a folder watched with no event in it, while no event was
        lost. A folder is watched before it is listed, or listed again once it is (`_add_tree`)."""
        self.drain()
        dirty, everything = self._dirty, self._all_dirty
        self._dirty, self._all_dirty = set(), False
        if everything:
            return lambda folder: False
        return lambda folder: folder in self._watched and folder not in dirty

    def wait(self, stop: threading.Event, timeout: float, since: float) -> None:
        """Until a file is closed (at least `MIN_GAP_S` after `since`, the last scan's start, a
        monotonic time), `stop` is set, or `timeout` has passed."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                readable, _, _ = select.select([self._fd], [], [], min(left, 0.1))
            except (OSError, ValueError):
                stop.wait(left)
                return
            if readable and self.drain():
                gap = since + MIN_GAP_S - time.monotonic()
                if gap > 0:
                    stop.wait(gap)
                return
