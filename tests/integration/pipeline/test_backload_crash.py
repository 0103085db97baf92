"""A back-load (`dxa ingest FOLDER`) killed half-way loses nothing, and running it again finishes
the job: the files the killed run held (registered, claimed, being parsed or stored) are taken
over and counted by their outcome, not as duplicates of themselves; each distinct file ends
ingested or quarantined exactly once over the two runs. A run stopped early (an error, or its
caller stopped reading) leaves no copy in work/ that the database does not know."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from sqlalchemy import func, select

from db.migrate import upgrade
from db.models import Job, SourceFile
from services.backload import ingest_paths
from services.context import build_context
from services.recovery import recover_files
from settings import Settings
from tests.integration.pipeline.support import (
    VENV_BIN,
    Sample,
    dxa,
    files_below,
    make_batch,
    scan_end_state,
    service_env,
    wait_until,
)

FINISHED = ("ingested", "quarantined", "duplicate", "held")
FINAL = re.compile(r"^(?P<path>.+?): (?P<outcome>ingested|duplicate|quarantined|held)\b", re.M)


def _outcomes(text: str, folder: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in FINAL.finditer(text):
        if m.group("path").startswith(str(folder)):
            out.setdefault(m.group("path"), []).append(m.group("outcome"))
    return out


def test_a_back_load_killed_half_way_is_finished_by_running_it_again(tmp_path: Path, samples: list[Sample]) -> None:
    folder = tmp_path / "archive"
    batch = make_batch(samples, 400)
    for f in batch:
        (folder / f.rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / f.rel).write_bytes(f.data)
    data_dir = tmp_path / "data"
    env = service_env(DXA_DATA_DIR=str(data_dir), DXA_INBOX=str(tmp_path / "inbox"))
    settings = Settings(data_dir=data_dir, inbox=tmp_path / "inbox", database_url=None, broker_url=None)
    ctx = build_context(settings)
    upgrade(ctx.engine)

    def stored() -> int:
        with ctx.sessions() as session:
            return int(session.scalar(select(func.count()).where(SourceFile.status == "ingested")) or 0)

    first = dxa(["ingest", str(folder)], env, tmp_path / "first.log").start()
    try:
        wait_until(lambda: stored() >= 60 or not first.alive(), 120, "the first run to store some files")
        assert first.alive(), "the back-load finished before it could be killed"
        first.kill()  # the whole process group: the parse children too
    finally:
        first.stop()
    with ctx.sessions() as session:
        held = session.scalar(select(func.count()).where(Job.kind == "ingest_file", Job.state != "done"))
        finished = set(session.scalars(select(SourceFile.sha256).where(SourceFile.status.in_(FINISHED))))
    assert held, "the kill left no job half-done: nothing was tested"

    again = subprocess.run(
        [str(VENV_BIN / "dxa"), "ingest", str(folder)], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "NOT finished" not in again.stdout

    before, after = _outcomes(first.log(), folder), _outcomes(again.stdout, folder)
    assert sorted(after) == sorted(str(folder / f.rel) for f in batch)  # every file, once
    assert all(len(seen) == 1 for seen in after.values())
    # Each distinct content ends ingested or quarantined exactly once over the two runs: the files
    # the killed run held are not counted as duplicates of themselves, nor counted twice.
    sha = {str(folder / f.rel): f.sha256 for f in batch}
    kept = [sha[path] for path, seen in after.items() if seen != ["duplicate"]]
    distinct = set(sha.values())
    assert len(kept) == len(set(kept)) and not set(kept) & finished
    assert set(kept) | finished == distinct
    # A file the first run reported is a duplicate the second time.
    assert before and all(after[path] == ["duplicate"] for path in before)

    with ctx.sessions() as session:
        states = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        files = dict(session.execute(select(SourceFile.status, func.count()).group_by(SourceFile.status)).all())
        jobs_per_file = session.execute(
            select(func.count()).select_from(Job).where(Job.kind == "ingest_file").group_by(Job.source_file_id)
        ).all()
    assert set(states) == {"done"}, states
    assert set(files) <= {"ingested", "quarantined", "duplicate", "held"}, files
    assert sum(files.values()) == len(distinct)
    assert {n for (n,) in jobs_per_file} == {1}

    # Copies the killed run made but had not registered yet are known bytes now: the next start-up's
    # recovery (or the next back-load, once they have settled) drops them; nothing else is left.
    recover_files(ctx)
    with ctx.sessions() as session:
        waiting = dict(
            session.execute(select(SourceFile.sha256, SourceFile.stored_path).where(SourceFile.status == "held")).all()
        )
    state = scan_end_state(data_dir, tmp_path / "inbox", waiting)
    assert set(state.archived) | set(state.quarantined) | set(state.held) == distinct
    ctx.engine.dispose()


def test_a_back_load_stopped_early_leaves_no_unknown_copy(tmp_path: Path, samples: list[Sample]) -> None:
    paths = [s.path for s in samples if s.expect == "accept"][:12]
    settings = Settings(data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None)
    ctx = build_context(settings)
    upgrade(ctx.engine)

    run = ingest_paths(ctx, paths, chunk=3)
    first = next(run)
    run.close()  # the caller stopped reading: the chunks copied, claimed or parsed are given back

    assert first.outcome == "ingested"
    with ctx.sessions() as session:
        known = set(session.scalars(select(SourceFile.sha256)))
        running = session.scalar(select(func.count()).where(Job.state == "running"))
    left = files_below(tmp_path / "data" / "work")
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() in known for p in left)
    assert running == 0
    # Running it again finishes every file.
    outcomes = {one.path: one.outcome for one in ingest_paths(ctx, paths, chunk=3)}
    assert set(outcomes) == set(paths) and "unfinished" not in outcomes.values()
    with ctx.sessions() as session:
        assert set(session.scalars(select(SourceFile.status))) == {"ingested"}
    ctx.engine.dispose()
