"""The parsing child: results and typed errors come back; hangs and memory hogs are killed. The
reusable child answers many calls, is replaced after a failure or when it has done its share, stops
when its parent goes away, and a failure it may owe to an earlier call is judged again afresh."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.errors import NotDxaResult
from ingest.parse import ParseLimits
from services import parsing
from services.child import ChildFailed, ChildLimits, ReusableChild, run_in_child

LIMITS = ChildLimits(timeout_s=5, memory_mb=512)


def add(a: int, b: int) -> int:
    return a + b


def raise_parse_error() -> None:
    raise NotDxaResult("no BMD results in this file")


def sleep_forever() -> None:
    time.sleep(60)


def hog_memory() -> bytes:
    return b"x" * (2 * 1024 * 1024 * 1024)


def die() -> None:
    os.kill(os.getpid(), 9)


def test_result_comes_back() -> None:
    assert run_in_child(add, (2, 3), LIMITS) == 5


def test_typed_error_keeps_its_type_and_message() -> None:
    with pytest.raises(NotDxaResult, match="no BMD results"):
        run_in_child(raise_parse_error, (), LIMITS)


def test_hang_is_killed_at_the_time_limit() -> None:
    started = time.monotonic()
    with pytest.raises(ChildFailed) as info:
        run_in_child(sleep_forever, (), ChildLimits(timeout_s=0.5, memory_mb=512))
    assert info.value.code == "timeout"
    assert time.monotonic() - started < 5


def test_memory_cap_stops_a_hog() -> None:
    with pytest.raises(ChildFailed) as info:
        run_in_child(hog_memory, (), ChildLimits(timeout_s=10, memory_mb=256))
    assert info.value.code == "memory"


def take_64_mb() -> int:
    return len(bytearray(64 * 1024 * 1024))


def test_the_memory_cap_is_on_what_the_parse_adds_not_on_what_the_parent_had_mapped() -> None:
    """A long-running parent (a worker's threads and arenas, the test process) can map more than
    the cap before any parse: the child's cap counts from its forked size, so a parse needing a
    little memory runs, and a hog is still stopped."""
    limits = ChildLimits(timeout_s=20, memory_mb=256)
    reserved = mmap.mmap(-1, 512 * 1024 * 1024)  # virtual only: never touched
    child = ReusableChild()
    try:
        assert run_in_child(take_64_mb, (), limits) == 64 * 1024 * 1024
        assert child.run(take_64_mb, (), limits) == 64 * 1024 * 1024
        with pytest.raises(ChildFailed) as info:
            run_in_child(hog_memory, (), limits)
        assert info.value.code == "memory"
    finally:
        child.close(kill=True)
        reserved.close()


def test_killed_child_is_reported_as_crash() -> None:
    with pytest.raises(ChildFailed) as info:
        run_in_child(die, (), LIMITS)
    assert info.value.code == "crash"
    assert "SIGKILL" in info.value.message


def pid() -> int:
    return os.getpid()


def taint_then_die(name: str) -> str:
    """Succeeds in a fresh child and leaves state behind that kills the next call in the same one."""
    if os.environ.get("DXA_TEST_TAINTED") == "1":
        os.kill(os.getpid(), 9)
    os.environ["DXA_TEST_TAINTED"] = "1"
    return f"parsed {name}"


@pytest.fixture
def child() -> Iterator[ReusableChild]:
    reusable = ReusableChild()
    yield reusable
    reusable.close(kill=True)


def _running(process: int) -> bool:
    try:
        state = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_reusable_child_answers_many_calls_in_one_process(child: ReusableChild) -> None:
    first = child.run(pid, (), LIMITS)
    assert first != os.getpid()
    assert [child.run(add, (i, 1), LIMITS) for i in range(3)] == [1, 2, 3]
    with pytest.raises(NotDxaResult, match="no BMD results"):
        child.run(raise_parse_error, (), LIMITS)
    assert child.run(pid, (), LIMITS) == first, "a typed error is an answer, not a failure"


def test_reusable_child_holds_no_copy_of_the_parents_other_pipes(child: ReusableChild) -> None:
    """A subprocess's stdin pipe open in the parent when the child forks (Playwright's driver hung
    the browser tests this way): closing the parent's end must reach the reader at once."""
    read_end, write_end = os.pipe()
    try:
        assert child.run(add, (1, 1), LIMITS) == 2  # the child is up and serving
        os.close(write_end)
        os.set_blocking(read_end, False)
        assert os.read(read_end, 1) == b"", "end-of-file: no other process holds the write end"
    finally:
        os.close(read_end)


def test_reusable_child_is_replaced_after_a_failure(child: ReusableChild) -> None:
    first = child.run(pid, (), LIMITS)
    with pytest.raises(ChildFailed) as info:
        child.run(die, (), LIMITS)
    assert (info.value.code, info.value.reused) == ("crash", True)
    assert not _running(first)
    second = child.run(pid, (), LIMITS)
    assert second != first
    with pytest.raises(ChildFailed) as info:
        child.run(sleep_forever, (), ChildLimits(timeout_s=0.5, memory_mb=512))
    assert (info.value.code, info.value.reused) == ("timeout", True)
    assert not _running(second)
    with pytest.raises(ChildFailed) as info:
        child.run(hog_memory, (), ChildLimits(timeout_s=10, memory_mb=256))
    assert (info.value.code, info.value.reused) == ("memory", False), "its first call: the verdict is the file's"
    assert child.run(add, (2, 3), LIMITS) == 5


def test_reusable_child_retires_after_its_share_of_calls() -> None:
    child = ReusableChild(max_calls=2)
    try:
        pids = [child.run(pid, (), LIMITS) for _ in range(5)]
    finally:
        child.close()
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_reusable_children_stop_when_their_parent_dies() -> None:
    read_fd, write_fd = os.pipe()
    parent = os.fork()
    if parent == 0:  # a worker with two parse children (two runner threads), killed without warning
        status = 0
        try:
            os.close(read_fd)
            children = [ReusableChild(), ReusableChild()]
            pids = [c.run(pid, (), LIMITS) for c in children]
            os.write(write_fd, f"{pids[0]} {pids[1]}".encode())
        except BaseException:
            status = 70
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        pids = [int(p) for p in fh.read().split()]
    os.waitpid(parent, 0)
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(p) for p in pids), "an orphaned parse child must stop on its own"


def test_a_failure_a_reused_child_may_owe_to_an_earlier_file_is_judged_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DXA_TEST_TAINTED", raising=False)
    monkeypatch.setattr(parsing, "_parse_path", _tainting_parse)
    monkeypatch.setattr(parsing, "_children", type(parsing._children)())
    parse, child = ParseLimits(max_bytes=1000, max_pdf_pages=1), LIMITS
    assert parsing.parse_in_child("a", "first.dcm", parse, child) == "parsed first.dcm"  # type: ignore[comparison-overlap]
    # The same child would die on the next file; a fresh one parses it.
    assert parsing.parse_in_child("b", "second.dcm", parse, child) == "parsed second.dcm"  # type: ignore[comparison-overlap]
    # A fresh child's failure stands.
    monkeypatch.setattr(parsing, "_children", type(parsing._children)())
    monkeypatch.setattr(parsing, "_parse_path", _dying_parse)
    with pytest.raises(ChildFailed) as info:
        parsing.parse_in_child("c", "third.dcm", parse, child)
    assert (info.value.code, info.value.reused) == ("crash", False)


def _tainting_parse(path: str, name: str, limits: ParseLimits) -> str:
    return taint_then_die(name)


def _dying_parse(path: str, name: str, limits: ParseLimits) -> str:
    os.kill(os.getpid(), 9)
    return name


def die_on(n: int, fatal: int) -> int:
    if n == fatal:
        os.kill(os.getpid(), 9)
    return os.getpid()


def sleep_on(n: int, slow: int) -> int:
    if n == slow:
        time.sleep(60)
    return n


def test_run_many_answers_in_order_from_one_child(child: ReusableChild) -> None:
    outcomes = child.run_many(add, [(i, 1) for i in range(10)], LIMITS)
    assert [o.value for o in outcomes] == list(range(1, 11))
    assert [o.reused for o in outcomes] == [False] + [True] * 9
    assert child.run(add, (2, 2), LIMITS) == 4, "the child serves plain calls after the written-ahead ones"
    outcomes = child.run_many(raise_parse_error, [(), ()], LIMITS)
    assert all(isinstance(o.error, NotDxaResult) and o.value is None for o in outcomes)


def test_run_many_a_dying_call_costs_that_call_only(child: ReusableChild) -> None:
    """The calls written after it were never run: a fresh child answers them."""
    outcomes = child.run_many(die_on, [(i, 3) for i in range(8)], LIMITS)
    errors = [(o.error.code, o.error.reused) if isinstance(o.error, ChildFailed) else None for o in outcomes]
    assert errors == [None, None, None, ("crash", True), None, None, None, None]
    pids = [o.value for o in outcomes]
    assert len(set(pids[:3])) == 1 and len(set(pids[4:])) == 1 and pids[0] != pids[4]
    assert [o.reused for o in outcomes[4:]] == [False, True, True, True]


def test_run_many_a_hanging_call_is_stopped_at_its_own_limit(child: ReusableChild) -> None:
    started = time.monotonic()
    outcomes = child.run_many(sleep_on, [(i, 1) for i in range(4)], ChildLimits(timeout_s=0.5, memory_mb=512))
    assert time.monotonic() - started < 5
    assert [o.value for o in outcomes] == [0, None, 2, 3]
    assert isinstance(outcomes[1].error, ChildFailed) and outcomes[1].error.code == "timeout"


def test_run_many_carries_on_past_a_retiring_child() -> None:
    child = ReusableChild(max_calls=3)
    try:
        outcomes = child.run_many(pid, [()] * 7, LIMITS)
    finally:
        child.close()
    pids = [o.value for o in outcomes]
    assert all(o.error is None for o in outcomes)
    assert pids[0] == pids[2] != pids[3] == pids[5] != pids[6]


def test_parse_many_judges_a_reused_childs_failure_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DXA_TEST_TAINTED", raising=False)
    monkeypatch.setattr(parsing, "_parse_path", _tainting_parse)
    monkeypatch.setattr(parsing, "_children", type(parsing._children)())
    parse = ParseLimits(max_bytes=1000, max_pdf_pages=1)
    got = parsing.parse_many_in_child([("a", "first.dcm"), ("b", "second.dcm"), ("c", "third.dcm")], parse, LIMITS)
    # The second dies in the child the first tainted: parsed again in a fresh one; the third goes to a
    # fresh reusable child (the calls written after a failed one are sent again).
    assert got == ["parsed first.dcm", "parsed second.dcm", "parsed third.dcm"]
    monkeypatch.setattr(parsing, "_children", type(parsing._children)())
    monkeypatch.setattr(parsing, "_parse_path", _dying_parse)
    (alone,) = parsing.parse_many_in_child([("d", "fourth.dcm")], parse, LIMITS)
    assert isinstance(alone, ChildFailed) and (alone.code, alone.reused) == ("crash", False)
