"""Inbox entries that are not regular files get an outcome: logged and counted when first seen, a
QA entry and a move out of the inbox once they stay; names never logged, links never followed."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest
from sqlalchemy import select

from db.migrate import upgrade
from db.models import AuditEvent
from db.operations import snapshot
from dxa.embedded import watch_once
from ingest.watcher import OddEntries, ReadinessTracker, scan_inbox
from services import inbox_entries
from services.context import build_context
from settings import Settings

SECRET = "DOE_JANE_19500101"


def _odd_inbox(tmp_path: Path) -> tuple[Path, Path]:
    inbox = tmp_path / "inbox"
    (inbox / "sub" / f"{SECRET}_empty").mkdir(parents=True)
    (inbox / "modality").mkdir()
    (inbox / "modality" / "ok.dcm").write_bytes(b"x" * 10)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target.pipe"  # a FIFO: anything that read through the link would block
    os.mkfifo(target)
    os.symlink(target, inbox / f"{SECRET}.dcm")
    os.symlink(outside, inbox / f"{SECRET}_dir")
    os.symlink(tmp_path / "nowhere", inbox / f"{SECRET}_dangling.pdf")
    os.mkfifo(inbox / f"{SECRET}.fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(inbox / "s.sock"))
    sock.close()
    return inbox, target


def test_scan_classifies_without_following(tmp_path: Path) -> None:
    inbox, _ = _odd_inbox(tmp_path)
    files, odd = scan_inbox(inbox)
    assert list(files) == [str(inbox / "modality" / "ok.dcm")]
    kinds = sorted(odd.values())
    assert kinds == ["empty_folder", "fifo", "socket", "symlink", "symlink", "symlink"]


def test_odd_entries_rule() -> None:
    rule = OddEntries(persist_s=60)
    assert rule.observe({"a": "fifo"}, 0) == ([("a", "fifo")], [])
    assert rule.observe({"a": "fifo", "b": "symlink"}, 30) == ([("b", "symlink")], [])
    assert rule.observe({"a": "fifo", "b": "symlink"}, 61) == ([], [("a", "fifo")])
    assert rule.observe({"a": "fifo", "b": "symlink"}, 95) == ([], [("b", "symlink")])
    assert rule.observe({"a": "fifo"}, 200) == ([], [])  # reported once
    assert rule.observe({}, 201) == ([], [])
    assert rule.observe({"a": "fifo"}, 202) == ([("a", "fifo")], [])  # came back: a new entry


def test_watcher_refuses_records_and_moves_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    inbox, target = _odd_inbox(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", inbox=inbox, database_url=None, broker_url=None, min_file_age_s=0)
    ctx = build_context(settings)
    upgrade(ctx.engine)
    before = sum(inbox_entries.refused_total.values())
    rule = OddEntries(persist_s=3600)
    tracker = ReadinessTracker(0)
    with caplog.at_level(logging.DEBUG):
        watch_once(ctx, tracker, rule)
        watch_once(ctx, tracker, rule)  # seen again: not counted again
    assert sum(inbox_entries.refused_total.values()) - before == 6
    assert "6 entries are not a regular file, refused" in caplog.text
    with ctx.sessions() as session:
        assert not list(session.scalars(select(AuditEvent)))
    rule._persist_s = 0  # they stayed
    with caplog.at_level(logging.DEBUG):
        watch_once(ctx, tracker, rule)
    with ctx.sessions() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "inbox_entry_refused")))
    # empty folders (and "modality", emptied by the claim) are counted and logged, never recorded
    kinds = sorted(e.detail["kind"] for e in events)
    assert kinds == ["fifo", "socket", "symlink", "symlink", "symlink"]
    assert "1 entry is not a regular file, refused (1 empty_folder)" in caplog.text
    with ctx.sessions() as session:
        assert snapshot(session).inbox_refused == 5  # what /metrics and `dxa status` report
    remaining = {p.name for p in inbox.rglob("*")}
    assert remaining == {"sub", f"{SECRET}_empty", "modality"}  # the claimed file left; folders stay
    moved = list((settings.quarantine_dir / inbox_entries.FOLDER).iterdir())
    assert len(moved) == 10  # five entries and their sidecars
    assert target.exists() and os.path.islink(next(p for p in moved if p.name.endswith(".symlink")))
    assert SECRET not in caplog.text
    assert all(SECRET not in p.name for p in settings.quarantine_dir.rglob("*"))
    assert all(SECRET not in str(e.detail) for e in events)


def test_links_and_fifos_leave_an_inbox_on_another_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An inbox on its own volume (a share, a tmpfs): rename fails with EXDEV; the link is made again
    from its text and the FIFO made again in quarantine, and the originals leave the inbox."""
    import errno

    inbox, target = _odd_inbox(tmp_path)
    quarantine = tmp_path / "q"
    real_rename = os.rename

    def cross_device(src: object, dst: object) -> None:
        if str(src).startswith(str(inbox)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", cross_device)
    moved = inbox_entries._move_aside(quarantine, str(inbox / f"{SECRET}.dcm"), "symlink", "abc")
    assert moved is not None and not os.path.lexists(inbox / f"{SECRET}.dcm")
    assert os.readlink(quarantine / moved) == str(target) and target.exists()
    assert inbox_entries._move_aside(quarantine, str(inbox / f"{SECRET}.fifo"), "fifo", "def") is not None
    assert not os.path.lexists(inbox / f"{SECRET}.fifo")
    assert inbox_entries._move_aside(quarantine, str(inbox / "s.sock"), "socket", "ghi") is None  # stays, recorded
