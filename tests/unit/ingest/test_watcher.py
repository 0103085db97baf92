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
