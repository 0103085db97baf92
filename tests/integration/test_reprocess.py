"""QA's re-process: a file quarantined by a transient failure goes back through the same
pipeline, ends in the archive, and its stale quarantine reason disappears."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

import services.evaluation
import services.intake
import services.parsing
import services.recovery
import services.reprocess
import services.runner
from db.migrate import upgrade
from db.models import Job
from services.audit import Actor
from services.context import build_context
from settings import Settings

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "single" / "hologic" / "SP_DICOM_1.dcm"


def test_quarantined_file_is_reprocessed_into_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A parse child left warm by an earlier test could answer within the 1 ms limit: start afresh.
    monkeypatch.setattr(services.parsing, "_children", threading.local())
    settings = Settings(data_dir=tmp_path / "var", parse_timeout_s=0.001, max_attempts=1)
    ctx = build_context(settings)
    upgrade(ctx.engine)
    src = tmp_path / "SP_DICOM_1.dcm"
    shutil.copyfile(SAMPLE, src)

    first = services.intake.intake(ctx, src, copy=True)
    assert first.job_id is not None
    result = services.runner.run_job(ctx, first.job_id)
    assert result is not None and result.outcome == "quarantined" and "timeout" in result.detail
    quarantined = list((settings.quarantine_dir / "timeout").glob("*.dcm"))
    assert len(quarantined) == 1 and quarantined[0].with_name(quarantined[0].name + ".json").exists()

    assert services.reprocess.reprocess(ctx, Actor("qa-user", None), first.source_file_id)  # QA's button
    assert not services.reprocess.reprocess(ctx, Actor("qa-user", None), first.source_file_id)  # not quarantined now
    with ctx.sessions() as session:
        job_id = session.scalars(select(Job.id).where(Job.state == "queued")).one()
    ctx.settings = settings.model_copy(update={"parse_timeout_s": 30.0})
    again = services.runner.run_job(ctx, job_id)
    assert again is not None and again.outcome == "ingested"
    assert not list(settings.quarantine_dir.rglob("*.dcm")) and not list(settings.quarantine_dir.rglob("*.json"))
    assert len(list(settings.archive_dir.rglob("*.dcm"))) == 1
    assert src.exists(), "dxa ingest copies: the original stays where it was"
