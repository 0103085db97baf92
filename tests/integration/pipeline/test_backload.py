"""The back-load pipeline (`services.backload`, issue 13): chunks registered, claimed, parsed by
parser threads while the chunk before is stored. Every path gets exactly one outcome, in chunks
small enough here that several overlap, and a file that kills its parse child is tried again
until its attempts are used up, without taking the files of its chunk with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import services.parsing
from db.migrate import upgrade
from db.models import Job, SourceFile
from services.backload import ingest_paths, run_queued_evaluations
from services.context import build_context
from settings import Settings
from tests.integration.pipeline.support import Sample

_real_parse_path = services.parsing._parse_path


def crash_on_marked(path: str, name: str, limits: Any) -> Any:
    """In the parse child: a file named crash-* kills it, as a hostile file would."""
    if name.startswith("crash-"):
        os._exit(3)
    return _real_parse_path(path, name, limits)


def test_a_back_load_gives_every_file_one_outcome_and_a_crashing_file_sinks_alone(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted = [s for s in samples if s.expect == "accept"][:9]
    crash = tmp_path / "archive" / "crash-0.dcm"
    crash.parent.mkdir(parents=True)
    crash.write_bytes(accepted[0].data + b"\0")  # other bytes than any sample
    paths = [s.path for s in accepted[:5]] + [crash] + [s.path for s in accepted[5:]] + [accepted[1].path]
    monkeypatch.setattr(services.parsing, "_parse_path", crash_on_marked)
    settings = Settings(
        data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None, max_attempts=2
    )
    ctx = build_context(settings)
    upgrade(ctx.engine)

    loaded = list(ingest_paths(ctx, paths, chunk=3))
    outcomes: dict[Path, list[str]] = {}
    for one in loaded:
        outcomes.setdefault(one.path, []).append(one.outcome)

    assert sorted(map(str, (one.path for one in loaded))) == sorted(map(str, paths))  # each exactly once
    assert outcomes[crash] == ["quarantined"]
    assert sorted(outcomes[accepted[1].path]) == ["duplicate", "ingested"]  # the path given twice
    assert all(outcomes[s.path] == ["ingested"] for s in accepted if s is not accepted[1])
    assert run_queued_evaluations(ctx) > 0
    with ctx.sessions() as session:
        states = set(session.scalars(select(Job.state)))
        crashed = session.scalars(select(SourceFile).where(SourceFile.original_name == crash.name)).one()
    assert states == {"done"}
    assert crashed.status == "quarantined" and crashed.attempts == 2
    ctx.engine.dispose()


class _StillParsing:
    """A chunk's parse as the storing thread finds it when the parse children are behind: not done
    when looked at, its result there once asked for."""

    def __init__(self, future: Any) -> None:
        self._future = future

    def done(self) -> bool:
        return False

    def result(self) -> Any:
        return self._future.result()

    def cancel(self) -> bool:
        return bool(self._future.cancel())


@pytest.mark.parametrize("settle_s", [0.0, 3600.0])
def test_a_back_load_evaluates_settled_patients_while_it_waits_for_a_parse_and_the_rest_at_its_end(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch, settle_s: float
) -> None:
    import services.backload

    real = services.backload._parse_chunk

    def behind(ctx: Any, parsers: Any, chunk: Any) -> None:
        real(ctx, parsers, chunk)
        chunk.parsing = [_StillParsing(future) for future in chunk.parsing]

    monkeypatch.setattr(services.backload, "_parse_chunk", behind)
    monkeypatch.setattr(services.backload, "SETTLE_S", settle_s)
    accepted = [s for s in samples if s.expect == "accept"]
    settings = Settings(data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None)
    ctx = build_context(settings)
    upgrade(ctx.engine)

    def evaluated() -> list[int | None]:
        with ctx.sessions() as session:
            return list(
                session.scalars(select(Job.patient_id).where(Job.kind == "evaluate_patient", Job.state == "done"))
            )

    loaded = list(ingest_paths(ctx, [s.path for s in accepted], chunk=3))
    assert {one.outcome for one in loaded} == {"ingested"}
    during = evaluated()
    assert bool(during) == (settle_s == 0.0), "settled evaluations run while a parse is awaited, only those"
    run_queued_evaluations(ctx)
    with ctx.sessions() as session:
        patients = set(session.scalars(select(SourceFile.patient_id).where(SourceFile.patient_id.is_not(None))))
        left = session.scalars(select(Job).where(Job.kind == "evaluate_patient", Job.state != "done")).first()
    assert left is None and set(evaluated()) == patients, "every patient evaluated in the end"
    ctx.engine.dispose()
