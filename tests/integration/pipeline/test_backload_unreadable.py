"""A source file that cannot be read stops nothing (issue 13): `dxa ingest` reports it on a line of
its own, counts it in the summary and the exit status, and loads every other file; the watcher
sets a claimed file it cannot read aside for QA rather than giving it back to the inbox for ever.
We run as root, so no chmod 000: files vanish, turn into folders, fail with EIO or are not files."""

from __future__ import annotations

import errno
import io
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

import services.backload
import services.files
import services.intake
from db.migrate import upgrade
from db.models import AuditEvent, Job, SourceFile
from dxa.cli import main
from dxa.embedded import watch_once
from ingest.watcher import ReadinessTracker
from services import inbox_entries, runner
from services.backload import ingest_paths, list_sources
from services.context import Context, build_context
from services.files import NotARegularFile, sha256_of
from settings import Settings
from tests.integration.pipeline.support import Sample, files_below

SECRET = "DOE_JANE_19500101"  # a name a sender might give a file: never in a detail, log or quarantine name
_real_copy = services.files.claim_by_copy
_real_open = services.files.open_regular


def _context(tmp_path: Path) -> Context:
    settings = Settings(
        data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None, min_file_age_s=0
    )
    ctx = build_context(settings)
    upgrade(ctx.engine)
    return ctx


def _archive(tmp_path: Path, samples: list[Sample]) -> tuple[Path, list[Path]]:
    """An archive folder: four real reports, and entries that are not files: a dangling link, a link
    to a report (links inside a folder are not followed), a FIFO, a socket-free device-free rest."""
    folder = tmp_path / "archive"
    folder.mkdir()
    good = []
    for k, sample in enumerate([s for s in samples if s.expect == "accept"][:6]):
        dest = folder / f"{k}-{SECRET}{Path(sample.rel).suffix}"
        shutil.copyfile(sample.path, dest)
        good.append(dest)
    os.symlink(tmp_path / "nowhere.pdf", folder / f"{SECRET}-dangling.pdf")
    os.symlink(good[0], folder / f"{SECRET}-link.dcm")
    os.mkfifo(folder / f"{SECRET}.dcm")
    return folder, good


@pytest.fixture
def failing_copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Files named in the dict fail between the listing and the copy: `gone` (deleted), `folder`
    (replaced by a folder named like a report), `eio` (the disk fails reading it)."""
    plan: dict[str, str] = {}

    def copy(src: Path, work_dir: Path, owner: str = "") -> Path:
        what = plan.get(src.name)
        if what == "gone":
            src.unlink()
        elif what == "folder":
            src.unlink()
            src.mkdir()
        return _real_copy(src, work_dir, owner)

    def open_regular(path: Path) -> io.BufferedReader:
        if plan.get(path.name) == "eio":
            raise OSError(errno.EIO, "Input/output error", str(path))
        return _real_open(path)

    monkeypatch.setattr(services.backload, "claim_by_copy", copy)
    monkeypatch.setattr(services.files, "open_regular", open_regular)
    yield plan


def test_listing_reports_what_it_will_not_read(tmp_path: Path, samples: list[Sample]) -> None:
    folder, good = _archive(tmp_path, samples)
    missing = tmp_path / f"{SECRET}-typo"
    listed = list_sources([folder, missing, good[1]])  # a link given by name would be followed
    files = [one for one in listed if isinstance(one, Path)]
    skipped = {one.path.name: one.detail for one in listed if not isinstance(one, Path)}
    assert sorted(files) == sorted([*good, good[1]])
    assert skipped == {
        f"{SECRET}-dangling.pdf": "a symbolic link inside a folder (not followed: name its target on the command line)",
        f"{SECRET}-link.dcm": "a symbolic link inside a folder (not followed: name its target on the command line)",
        f"{SECRET}.dcm": "not a regular file: a named pipe",
        f"{SECRET}-typo": "no such file or folder",
    }


def test_a_back_load_skips_and_reports_a_file_it_cannot_read_and_loads_the_rest(
    tmp_path: Path, samples: list[Sample], failing_copies: dict[str, str]
) -> None:
    ctx = _context(tmp_path)
    folder, good = _archive(tmp_path, samples)
    gone, turned, broken = good[1], good[3], good[4]
    failing_copies.update({gone.name: "gone", turned.name: "folder", broken.name: "eio"})
    files = [one for one in list_sources([folder]) if isinstance(one, Path)]

    loaded = list(ingest_paths(ctx, files, chunk=2))  # several chunks: the failures sit in different ones

    outcomes = {one.path: (one.outcome, one.detail) for one in loaded}
    assert sorted(one.path for one in loaded) == sorted(files)  # each exactly once
    assert outcomes[gone] == ("unreadable", "no such file (moved or deleted before it could be read) (ENOENT)")
    assert outcomes[turned] == ("unreadable", "not a regular file: a folder")
    assert outcomes[broken] == ("unreadable", "input/output error (the disk or network share failed to read it) (EIO)")
    assert all(outcomes[path][0] == "ingested" for path in good if path not in (gone, turned, broken))
    assert all(SECRET not in detail and str(tmp_path) not in detail for _, detail in outcomes.values())
    assert files_below(ctx.settings.work_dir) == []  # no cut copy left behind
    with ctx.sessions() as session:
        assert set(session.scalars(select(Job.state).where(Job.kind == "ingest_file"))) == {"done"}
        assert len(list(session.scalars(select(SourceFile)))) == 3
    ctx.engine.dispose()


def test_dxa_ingest_prints_a_line_for_every_unreadable_path_and_exits_1(
    tmp_path: Path,
    samples: list[Sample],
    failing_copies: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DXA_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("DXA_DATABASE_URL", raising=False)
    monkeypatch.delenv("DXA_BROKER_URL", raising=False)
    folder, good = _archive(tmp_path, samples)
    failing_copies[good[2].name] = "eio"
    missing = tmp_path / f"{SECRET}-typo.pdf"

    assert main(["ingest", str(folder), str(missing)]) == 1

    out = capsys.readouterr().out.splitlines()
    assert f"{good[2]}: unreadable: input/output error (the disk or network share failed to read it) (EIO)" in out
    assert f"{missing}: unreadable: no such file or folder" in out
    assert f"{folder / (SECRET + '.dcm')}: unreadable: not a regular file: a named pipe" in out
    assert sum(line.startswith(f"{good[0]}: ingested") for line in out) == 1
    assert out[-1].startswith("10 files: 5 ingested, 0 duplicate, 0 quarantined, 5 NOT READ (unreadable: see above)")
    # Fixed and run again: the missing file loads, the others are duplicates; exit 0 when all are read.
    failing_copies.clear()
    capsys.readouterr()
    assert main(["ingest", str(good[2])]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{good[2]}: ingested")


def _unreadable(monkeypatch: pytest.MonkeyPatch, marked: str) -> None:
    """The watcher's claim of `marked` renames fine, then its bytes cannot be read (EIO)."""
    real = services.files.sha256_of

    def sha(path: Path) -> str:
        if path.read_bytes().startswith(marked.encode()):
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path)

    monkeypatch.setattr(services.intake, "sha256_of", sha)


@pytest.mark.parametrize("with_writer", [False, True], ids=["watcher registers", "embedded writer registers"])
def test_the_watcher_sets_a_file_it_cannot_read_aside_for_qa(
    tmp_path: Path,
    samples: list[Sample],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    with_writer: bool,
) -> None:
    ctx = _context(tmp_path)
    inbox = ctx.settings.inbox_dir
    inbox.mkdir(parents=True)
    for sample in [s for s in samples if s.expect == "accept"][:3]:
        shutil.copyfile(sample.path, inbox / Path(sample.rel).name)
    (inbox / f"{SECRET}.pdf").write_bytes(b"BAD-SECTOR" + b"x" * 100)
    _unreadable(monkeypatch, "BAD-SECTOR")
    writer = runner.Pipeline(ctx) if with_writer else None
    tracker = ReadinessTracker(0)
    try:
        for _ in range(4):  # seen, claimed; then nothing is left to claim again
            watch_once(ctx, tracker)
            if writer is not None:
                writer.step()
    finally:
        if writer is not None:
            writer.close()

    assert files_below(inbox) == []
    aside = files_below(ctx.settings.quarantine_dir / inbox_entries.READ_ERROR)
    assert sorted(p.suffix for p in aside) == [".json", ".pdf"]
    kept = next(p for p in aside if p.suffix == ".pdf")
    assert kept.read_bytes().startswith(b"BAD-SECTOR")
    with ctx.sessions() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "inbox_entry_refused")))
        registered = len(list(session.scalars(select(SourceFile))))
    assert [e.detail["kind"] for e in events] == ["unreadable"]
    assert "EIO" in events[0].detail["reason"]
    assert registered == 3
    assert SECRET not in caplog.text and all(SECRET not in p.name for p in aside)
    assert "it is tried again" not in caplog.text
    ctx.engine.dispose()


def test_hashing_a_pipe_is_refused_at_once_rather_than_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "swapped-in.dcm"
    os.mkfifo(fifo)
    outcome: list[BaseException | str] = []
    thread = threading.Thread(target=lambda: outcome.append(_try(lambda: sha256_of(fifo))), daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # the old code blocks in open(): let it go before failing
        with open(fifo, "wb"):
            pass
        thread.join(timeout=10)
        pytest.fail("hashing a named pipe blocked")
    assert isinstance(outcome[0], NotARegularFile)
    assert str(tmp_path) not in str(outcome[0])


def _try(fn: object) -> BaseException | str:
    try:
        return fn()  # type: ignore[operator,no-any-return]
    except BaseException as exc:
        return exc


def test_a_file_the_watcher_cannot_claim_waits_and_is_recorded_for_qa_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An inbox on another volume is copied into work/: a file that cannot be read cannot be claimed
    at all. It stays in the inbox, is tried again after a wait (not at every scan, each with a
    warning), and is recorded for QA once."""
    ctx = _context(tmp_path)
    inbox = ctx.settings.inbox_dir
    inbox.mkdir(parents=True)
    (inbox / f"{SECRET}.pdf").write_bytes(b"x" * 100)
    tries: list[Path] = []

    def refuse(src: Path, work_dir: Path, moves: object = None) -> Path:
        tries.append(src)
        raise PermissionError(errno.EACCES, "Permission denied", str(src))

    monkeypatch.setattr(services.intake, "claim_by_rename", refuse)
    tracker = ReadinessTracker(0)
    for _ in range(6):
        watch_once(ctx, tracker)
    assert len(tries) == 1  # then it waits RETRY_S
    assert "could not be claimed (permission denied (EACCES)); tried again in 30 s" in caplog.text
    tracker = ReadinessTracker(0, retry_s=0)
    for _ in range(6):
        watch_once(ctx, tracker)
    with ctx.sessions() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "inbox_entry_refused")))
    assert [e.detail["kind"] for e in events] == ["unreadable"]
    assert (inbox / f"{SECRET}.pdf").exists()  # nothing lost
    assert SECRET not in caplog.text
    ctx.engine.dispose()


def test_work_refusing_the_copies_stops_the_back_load_rather_than_calling_files_unreadable(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk under work/ is this host's fault, the same for every file: stop, say so, keep nothing."""
    ctx = _context(tmp_path)
    _, good = _archive(tmp_path, samples)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as raised:
        list(ingest_paths(ctx, good, chunk=2))
    assert raised.value.errno == errno.ENOSPC and not isinstance(raised.value, services.files.UnreadableSource)
    assert files_below(ctx.settings.work_dir) == [] and all(path.is_file() for path in good)
    ctx.engine.dispose()
