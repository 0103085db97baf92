"""Readiness of files in the watched folder: stable over two scans and old enough."""

from __future__ import annotations

from pathlib import Path

from ingest.watcher import FileState, ReadinessTracker, is_ignored, scan_folder


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


def test_a_closed_file_is_ready_at_its_first_scan_but_not_before_its_minimum_age() -> None:
    tracker = ReadinessTracker(min_age_s=2)
    assert tracker.observe({"a": FileState(10, 100.0)}, now=101, closed={"a"}) == []
    assert tracker.observe({"a": FileState(10, 100.0), "b": FileState(5, 100.0)}, now=103, closed={"a"}) == ["a"]
    assert tracker.observe({"b": FileState(5, 100.0)}, now=104) == ["b"]  # b: by the two scans
