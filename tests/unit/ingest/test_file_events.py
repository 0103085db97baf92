"""Files known closed from inotify events (`ingest.file_events`): a file is closed once its writer
closed it or it was moved in whole, and not while it is being written."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ingest.file_events import ClosedFiles


@pytest.fixture
def events(tmp_path: Path) -> ClosedFiles:
    found = ClosedFiles.open(tmp_path)
    if found is None:
        pytest.skip("no inotify here")
    return found


def test_a_file_being_written_is_not_closed_until_its_writer_closes_it(tmp_path: Path, events: ClosedFiles) -> None:
    path = tmp_path / "a.dcm"
    with path.open("wb") as out:
        out.write(b"half")
        out.flush()
        assert str(path) not in events.drain() and str(path) not in events.closed
        out.write(b" and the rest")
    assert events.drain() == {str(path)}
    with path.open("ab") as out:  # written again: not closed until closed again
        out.write(b"more")
        out.flush()
        events.drain()
        assert str(path) not in events.closed
    events.drain()
    assert str(path) in events.closed
    events.close()


def test_moved_in_files_count_in_new_subfolders_and_temporary_names_never(tmp_path: Path, events: ClosedFiles) -> None:
    (tmp_path / "sub").mkdir()
    events.drain()  # the new folder is watched from here on
    tmp = tmp_path / "sub" / "b.pdf.part"
    tmp.write_bytes(b"%PDF")
    assert events.drain() == set()  # a temporary name
    os.replace(tmp, tmp_path / "sub" / "b.pdf")
    assert events.drain() == {str(tmp_path / "sub" / "b.pdf")}
    os.replace(tmp_path / "sub" / "b.pdf", tmp_path / "elsewhere.pdf")
    events.drain()
    assert events.closed == {str(tmp_path / "elsewhere.pdf")}
    events.close()


def test_wait_returns_when_a_file_is_closed_and_not_before(tmp_path: Path, events: ClosedFiles) -> None:
    stop = threading.Event()
    start = time.monotonic()
    events.wait(stop, 0.2, start)
    assert time.monotonic() - start >= 0.2  # nothing happened: the whole timeout
    threading.Timer(0.05, lambda: (tmp_path / "c.dcm").write_bytes(b"x")).start()
    start = time.monotonic()
    events.wait(stop, 30.0, start)
    assert time.monotonic() - start < 10.0
    assert str(tmp_path / "c.dcm") in events.closed
    events.close()


def test_a_folder_is_unchanged_until_an_event_in_it_and_a_new_folder_is_listed_once_watched(
    tmp_path: Path, events: ClosedFiles
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    events.close()
    events = ClosedFiles.open(tmp_path) or pytest.fail("inotify went away")
    assert not events.unchanged_folders()(str(tmp_path / "a")), "nothing is vouched for before a first look"
    unchanged = events.unchanged_folders()
    assert unchanged(str(tmp_path / "a")) and unchanged(str(tmp_path / "b")) and unchanged(str(tmp_path))
    (tmp_path / "b" / "x.dcm").write_bytes(b"1")
    (tmp_path / "c").mkdir()
    unchanged = events.unchanged_folders()
    assert unchanged(str(tmp_path / "a"))
    assert not unchanged(str(tmp_path / "b")) and not unchanged(str(tmp_path))  # events in them
    assert not unchanged(str(tmp_path / "c")), "a folder watched since the last look is listed once more"
    unchanged = events.unchanged_folders()
    assert unchanged(str(tmp_path / "b")) and unchanged(str(tmp_path / "c"))
    assert not unchanged(str(tmp_path / "elsewhere")), "an unwatched folder is never vouched for"
    events.close()
