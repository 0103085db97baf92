"""Readiness of files in the watched folder: stable over two scans and old enough."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ingest.watcher import FileState, InboxListing, ReadinessTracker, is_ignored, scan_folder


def test_a_file_is_ready_only_after_two_identical_scans() -> None:
    tracker = ReadinessTracker(min_age_s=2)
    assert tracker.observe({"a": FileState(10, 100.0)}, now=110) == []
    assert tracker.observe({"a": FileState(10, 100.0)}, now=112) == ["a"]


def test_a_growing_file_is_not_ready() -> None:
    tracker = ReadinessTracker(min_age_s=0)
    tracker.observe({"a": FileState(10, 100.0)}, now=110)
    assert tracker.observe({"a": FileState(20, 101.0)}, now=111) == []
    assert tracker.observe({"a": FileState(20, 101.0)}, now=112) == ["a"]


def test_a_too_recent_file_waits() -> None:
    tracker = ReadinessTracker(min_age_s=30)
    tracker.observe({"a": FileState(10, 100.0)}, now=101)
    assert tracker.observe({"a": FileState(10, 100.0)}, now=102) == []
    assert tracker.observe({"a": FileState(10, 100.0)}, now=131) == ["a"]


def test_temporary_and_hidden_names_are_ignored_but_dotdot_names_are_not() -> None:
    assert is_ignored("scan.dcm.part") and is_ignored("x.TMP") and is_ignored(".rsync.ab12")
    assert not is_ignored("..%2f..%2fetc.dcm")
    assert not is_ignored("20191119_SP_DICOM.dcm")


def test_scan_is_recursive_and_skips_ignored(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "a.dcm").write_bytes(b"1")
    (tmp_path / "b.pdf.part").write_bytes(b"2")
    (tmp_path / ".hidden").write_bytes(b"3")
    found = scan_folder(tmp_path)
    assert list(found) == [str(tmp_path / "sub" / "deeper" / "a.dcm")]


def test_a_file_whose_claim_failed_waits_doubling_unless_it_changes() -> None:
    tracker = ReadinessTracker(min_age_s=0, retry_s=10, retry_max_s=25)
    a = FileState(10, 100.0)
    tracker.observe({"a": a}, now=110)
    assert tracker.observe({"a": a}, now=111) == ["a"]
    assert tracker.failed("a", now=111) == (1, 10)
    assert tracker.observe({"a": a}, now=115) == []  # waits
    assert tracker.observe({"a": a}, now=121) == ["a"]  # tried again
    assert tracker.failed("a", now=121) == (2, 20)
    assert tracker.observe({"a": a}, now=140) == []
    assert tracker.observe({"a": a}, now=141) == ["a"]
    assert tracker.failed("a", now=141) == (3, 25)  # no longer than retry_max_s
    changed = FileState(10, 150.0)  # written again (or its permissions fixed by a copy): fresh
    assert tracker.observe({"a": changed}, now=151) == []
    assert tracker.observe({"a": changed}, now=152) == ["a"]
    assert tracker.failed("a", now=152) == (1, 10)
    assert tracker.observe({}, now=153) == []  # gone: forgotten
    assert tracker.observe({"a": a}, now=154) == []
    assert tracker.observe({"a": a}, now=155) == ["a"]


def test_a_closed_file_is_ready_at_its_first_scan_but_not_before_its_minimum_age() -> None:
    tracker = ReadinessTracker(min_age_s=2)
    assert tracker.observe({"a": FileState(10, 100.0)}, now=101, closed={"a"}) == []
    assert tracker.observe({"a": FileState(10, 100.0), "b": FileState(5, 100.0)}, now=103, closed={"a"}) == ["a"]
    assert tracker.observe({"b": FileState(5, 100.0)}, now=104) == ["b"]  # b: by the two scans


def test_observing_a_big_inbox_takes_linear_time() -> None:
    """A hospital's archive dropped at once: 200 000 stable files in one scan (quadratic, this took
    hours; linear, well under a second)."""
    import time

    tracker = ReadinessTracker(min_age_s=0)
    snapshot = {f"/inbox/{k:06d}.dcm": FileState(10, 100.0) for k in range(200_000)}
    tracker.observe(snapshot, now=110)
    started = time.monotonic()
    ready = tracker.observe(snapshot, now=111)
    assert len(ready) == 200_000 and time.monotonic() - started < 20
    tracker.defer(ready[10:])
    assert tracker.observe(snapshot, now=112) == ready[10:]  # deferred: ready again at once


def _settled(*folders: Path) -> None:
    """Folder mtimes well in the past, as an archive's folders are (a listing trusts an mtime only
    once it is older than `SETTLED_S`)."""
    for folder in folders:
        os.utime(folder, (time.time() - 600, time.time() - 600))


def test_a_listing_lists_again_only_the_folders_whose_mtime_changed(tmp_path: Path) -> None:
    empty = [tmp_path / f"v{i}" / "patient" for i in range(5)]
    for folder in empty:
        folder.mkdir(parents=True)
    (tmp_path / "v0" / "a.dcm").write_bytes(b"1")
    _settled(tmp_path, *empty, *(f.parent for f in empty))
    listing = InboxListing(tmp_path)
    files, odd = listing.scan(time.time())
    assert listing.listed == 11 and set(files) == {str(tmp_path / "v0" / "a.dcm")}
    assert {p for p, kind in odd.items() if kind == "empty_folder"} == {str(f) for f in empty}
    again, odd_again = listing.scan(time.time())
    assert listing.listed == 0, "unchanged folders are not listed again"
    assert again == files and odd_again == odd
    (empty[3] / "b.pdf").write_bytes(b"2")  # the folder's mtime moves
    files, odd = listing.scan(time.time())
    assert listing.listed == 1
    assert set(files) == {str(tmp_path / "v0" / "a.dcm"), str(empty[3] / "b.pdf")}
    assert str(empty[3]) not in odd
    (tmp_path / "v0" / "a.dcm").write_bytes(b"longer")  # a file written again: its state read again
    files, _ = listing.scan(time.time())
    assert listing.listed == 1 and files[str(tmp_path / "v0" / "a.dcm")].size == 6


def test_a_listing_lists_a_folder_changed_in_the_tick_of_its_listing_again(tmp_path: Path) -> None:
    """A folder modified just now may change again within the same tick of its mtime: its listing
    is not trusted until the mtime is old enough."""
    (tmp_path / "new").mkdir()
    listing = InboxListing(tmp_path)
    listing.scan(time.time())
    listing.scan(time.time())
    assert listing.listed == 2, "recent mtimes: listed again"


def test_a_listing_takes_unchanged_folders_from_inotify_without_a_system_call(tmp_path: Path) -> None:
    (tmp_path / "v0" / "p").mkdir(parents=True)
    (tmp_path / "v1" / "p").mkdir(parents=True)
    (tmp_path / "v1" / "p" / "a.dcm").write_bytes(b"1")
    listing = InboxListing(tmp_path)
    listing.scan(time.time())
    dirty = {str(tmp_path / "v1" / "p")}
    files, _ = listing.scan(time.time(), lambda folder: folder not in dirty)
    assert listing.listed == 1 and set(files) == {str(tmp_path / "v1" / "p" / "a.dcm")}
    (tmp_path / "v0" / "p" / "b.dcm").write_bytes(b"2")
    files, _ = listing.scan(time.time(), lambda folder: True)
    assert listing.listed == 0 and str(tmp_path / "v0" / "p" / "b.dcm") not in files  # vouched for
    files, _ = listing.scan(time.time(), lambda folder: folder != str(tmp_path / "v0" / "p"))
    assert str(tmp_path / "v0" / "p" / "b.dcm") in files


def test_a_listing_lists_every_folder_again_after_its_full_listing_time(tmp_path: Path) -> None:
    (tmp_path / "v0").mkdir()
    _settled(tmp_path, tmp_path / "v0")
    listing = InboxListing(tmp_path, full_list_s=60)
    now = time.time()
    listing.scan(now)
    listing.scan(now + 30, lambda folder: True)
    assert listing.listed == 0
    listing.scan(now + 61, lambda folder: True)
    assert listing.listed == 2


def test_deferred_files_are_taken_in_order_without_a_scan_and_a_scan_supersedes_them() -> None:
    tracker = ReadinessTracker(min_age_s=0)
    snapshot = {p: FileState(1, 1.0) for p in ("a", "b", "c", "d")}
    tracker.observe(snapshot, now=10)
    ready = tracker.observe(snapshot, now=11)
    tracker.defer(ready[1:])
    assert tracker.deferred == 3
    assert tracker.take_deferred(2) == [("b", FileState(1, 1.0)), ("c", FileState(1, 1.0))]
    assert tracker.failed("c", now=12)[0] == 1  # taken files count as given
    assert tracker.deferred == 1
    # A scan: d (deferred, unchanged) is ready; a and b were given (claimed: seen again, they are new),
    # c waits after its failed claim.
    assert tracker.observe(snapshot, now=13) == ["d"]
    assert tracker.deferred == 0
