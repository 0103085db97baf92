"""Decide when a file in the watched folder is complete enough to claim.

Network shares (SMB, NFS) send no file events, so a periodic scan is the source of truth:
a file is ready when its size and mtime are unchanged over two scans and it is older than a
minimum age. Temporary names that scanners and copy tools use while writing (`*.part`,
`*.tmp`, hidden dotfiles such as rsync's `.name.XXXX`) are never claimed.

`ReadinessTracker` holds only that rule (no I/O, no clock: `now` is passed in);
`scan_folder` is the small I/O half that lists candidate files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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


class ReadinessTracker:
    def __init__(self, min_age_s: float) -> None:
        self._min_age_s = min_age_s
        self._last: dict[str, FileState] = {}

    def observe(self, snapshot: dict[str, FileState], now: float) -> list[str]:
        """Feed one scan; return the paths that are ready (stable since the previous scan)."""
        ready = [
            path
            for path, state in snapshot.items()
            if self._last.get(path) == state and now - state.mtime >= self._min_age_s
        ]
        self._last = {p: s for p, s in snapshot.items() if p not in ready}
        return sorted(ready)

    def forget(self, path: str) -> None:
        self._last.pop(path, None)


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
    snapshot: dict[str, FileState] = {}
    for path in iter_files(root):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        snapshot[str(path)] = FileState(st.st_size, st.st_mtime)
    return snapshot
