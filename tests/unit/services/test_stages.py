"""The overlap of parse and store (`services.stages`): the next part is parsed while the part
before it is stored, every parse of a Celery chunk runs in the process's one parser thread (one
parse child per pool process), and a fault puts back what was claimed but not stored."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from services import stages
from services.ingestion import ClaimedFile, ParsedFile
from services.outcomes import ClaimedJob, JobResult

WAIT_S = 10.0  # far longer than any step here takes; reached only when the overlap is missing


def _files(n: int) -> list[ClaimedFile]:
    return [ClaimedFile(ClaimedJob(i, "ingest_file", 1, i, None), i, f"/w/{i}", f"{i}.dcm", "0" * 64) for i in range(n)]


def _result(file: ClaimedFile) -> JobResult:
    return JobResult(file.job.id, "ingest_file", "ingested", "")


@pytest.fixture
def ctx() -> Any:
    # The heartbeat's first beat comes after db.operations.HEARTBEAT_S: no database is reached here.
    return SimpleNamespace(sessions=None)


def test_the_next_part_is_parsed_while_the_part_before_is_stored(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    parsing_threads: list[str] = []
    parsed_parts: list[list[int]] = []
    second_parse_started = threading.Event()

    def parse_batch(_: Any, files: Sequence[ClaimedFile]) -> list[ParsedFile]:
        parsing_threads.append(threading.current_thread().name)
        parsed_parts.append([f.job.id for f in files])
        if len(parsed_parts) == 2:
            second_parse_started.set()
        return [(f, ()) for f in files]

    def store_batch(_: Any, parsed: Sequence[ParsedFile]) -> list[JobResult]:
        if parsed[0][0].job.id == 0:  # the first part is stored only once the second one is being parsed
            assert second_parse_started.wait(WAIT_S), "part 2 was not parsed during the store of part 1"
        return [_result(f) for f, _ in parsed]

    monkeypatch.setattr(stages, "parse_batch", parse_batch)
    monkeypatch.setattr(stages, "store_batch", store_batch)
    results = stages.ingest_overlapped(ctx, _files(20), part=8, later=8)
    assert [r.job_id for r in results] == list(range(20))
    assert parsed_parts == [list(range(8)), list(range(8, 14)), list(range(14, 20))]
    assert set(parsing_threads) == {"parser_0"}


def test_a_chunk_of_one_part_is_parsed_in_the_same_parser_thread(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not in the task's thread: that would give the pool process a second parse child."""
    threads: list[int | None] = []

    def parse_batch(_: Any, files: Sequence[ClaimedFile]) -> list[ParsedFile]:
        threads.append(threading.get_ident())
        return [(f, ()) for f in files]

    monkeypatch.setattr(stages, "parse_batch", parse_batch)
    monkeypatch.setattr(stages, "store_batch", lambda _, parsed: [_result(f) for f, _ in parsed])
    stages.ingest_overlapped(ctx, _files(20), part=8, later=8)
    assert [r.job_id for r in stages.ingest_overlapped(ctx, _files(3), part=8, later=8)] == [0, 1, 2]
    assert len(set(threads)) == 1 and threading.get_ident() not in threads


def test_a_store_fault_puts_back_the_part_parsed_meanwhile(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[int] = []

    def store_batch(_: Any, parsed: Sequence[ParsedFile]) -> list[JobResult]:
        if parsed[0][0].job.id == 8:
            raise ConnectionError("the database went away")
        return [_result(f) for f, _ in parsed]

    monkeypatch.setattr(stages, "parse_batch", lambda _, files: [(f, ()) for f in files])
    monkeypatch.setattr(stages, "store_batch", store_batch)
    monkeypatch.setattr(stages, "release", lambda _, job_id: released.append(job_id))
    with pytest.raises(ConnectionError):
        stages.ingest_overlapped(ctx, _files(20), part=8, later=8)
    # The failed part and the one parsed during its store go back; the first part stays stored.
    assert sorted(released) == list(range(8, 20))


def test_a_chunk_starts_with_a_small_part_then_larger_even_ones() -> None:
    """The task waits for the first part's parse only; the later parts are larger (a store pays a
    transaction's fixed cost per part) and even, none left small at the end."""
    sizes = {n: [end - start for start, end in stages._parts(n, 8, 24)] for n in (0, 3, 8, 20, 32, 33, 64)}
    assert sizes == {0: [], 3: [3], 8: [8], 20: [8, 12], 32: [8, 24], 33: [8, 13, 12], 64: [8, 19, 19, 18]}
    for n in range(0, 200):
        bounds = stages._parts(n, 8, 24)
        assert [i for start, end in bounds for i in range(start, end)] == list(range(n)), n
        assert all(end - start <= 24 for start, end in bounds[1:]), n


def _taking(monkeypatch: pytest.MonkeyPatch, queue: list[list[ClaimedFile]]) -> list[list[int]]:
    """Parts parsed (their job ids), with `queue` as the job table's queued files, part by part."""
    parsed: list[list[int]] = []

    def parse_batch(_: Any, files: Sequence[ClaimedFile]) -> list[ParsedFile]:
        parsed.append([f.job.id for f in files])
        return [(f, ()) for f in files]

    monkeypatch.setattr(stages, "parse_batch", parse_batch)
    monkeypatch.setattr(stages, "store_batch", lambda _, parsed: [_result(f) for f, _ in parsed])
    monkeypatch.setattr(stages, "_take_queued", lambda _, limit: (queue.pop(0) if queue else [], []))
    return parsed


def _claimed(ids: range, attempts: int = 1) -> list[ClaimedFile]:
    return [
        ClaimedFile(ClaimedJob(i, "ingest_file", attempts, i, None), i, f"/w/{i}", f"{i}.dcm", "0" * 64) for i in ids
    ]


def test_a_task_goes_on_with_the_queued_files_after_its_chunk(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within `taking_more`: the queue's files, part after part, each parsed while the one before
    is stored, until the queue has none; the evaluations are called between parts once due, or
    once the queue held fewer files than a part (a steady stream, not a backlog)."""
    queue = [_claimed(range(20, 44)), _claimed(range(44, 68)), _claimed(range(68, 73))]
    queue_copy = list(queue)
    parsed = _taking(monkeypatch, queue)
    evaluations: list[int] = []
    with stages.taking_more(evaluate=lambda: evaluations.append(len(queue)), every_s=3600.0):
        results = stages.ingest_overlapped(ctx, _files(20), part=8, later=12)
    assert [r.job_id for r in results] == list(range(73))
    assert parsed == [list(range(8)), list(range(8, 20)), *[[f.job.id for f in part] for part in queue_copy]]
    assert evaluations == [0], "none while the queue was full (every_s not reached); once it came up short"


def test_outside_taking_more_or_with_a_file_tried_before_a_task_takes_nothing_more(
    ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = [_claimed(range(20, 30))]
    _taking(monkeypatch, queue)
    assert [r.job_id for r in stages.ingest_overlapped(ctx, _files(3))] == [0, 1, 2]
    assert stages.take_queued_files(ctx) == []
    retried = _claimed(range(3), attempts=2)  # a file tried before runs alone
    with stages.taking_more():
        assert [r.job_id for r in stages.ingest_overlapped(ctx, retried)] == [0, 1, 2]
    assert len(queue) == 1, "nothing was taken from the queue"
    with stages.taking_more():
        assert [r.job_id for r in stages.take_queued_files(ctx)] == list(range(20, 30))


def test_a_backlogs_evaluations_run_every_every_s(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = [_claimed(range(20, 44)), _claimed(range(44, 68))]
    _taking(monkeypatch, queue)
    evaluations: list[int] = []
    with stages.taking_more(evaluate=lambda: evaluations.append(1), every_s=0.0):
        stages.ingest_overlapped(ctx, _files(3))
    assert len(evaluations) == 2


def test_a_task_stops_taking_more_once_its_time_is_up(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = [_claimed(range(20, 30)), _claimed(range(30, 35))]
    _taking(monkeypatch, queue)
    with stages.taking_more(for_s=0.0):
        assert [r.job_id for r in stages.ingest_overlapped(ctx, _files(3))] == [0, 1, 2]
    assert len(queue) == 2
