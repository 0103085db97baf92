"""The parsing child: results and typed errors come back; hangs and memory hogs are killed."""

from __future__ import annotations

import os
import time

import pytest

from ingest.errors import NotDxaResult
from workers.child import ChildFailed, ChildLimits, run_in_child

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


def test_killed_child_is_reported_as_crash() -> None:
    with pytest.raises(ChildFailed) as info:
        run_in_child(die, (), LIMITS)
    assert info.value.code == "crash"
    assert "SIGKILL" in info.value.message
