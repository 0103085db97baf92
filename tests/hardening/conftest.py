"""Shared fixtures of the hardening tests: the shared samples (required under CI) and a log file
every process writes to, opened per record so that a forked parse child (which closes inherited
descriptors) still writes there."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.integration.pipeline.support import SAMPLES


class AppendPerRecord(logging.Handler):
    """Opens, appends and closes for each record: works from any process forked from here."""

    def __init__(self, path: Path) -> None:
        super().__init__(level=logging.DEBUG)
        self.path = path
        self.setFormatter(logging.Formatter("%(process)d %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


@pytest.fixture(scope="session")
def samples_root() -> Path:
    if not SAMPLES.is_dir():
        skip_or_fail(f"shared samples not found at {SAMPLES}")
    return SAMPLES


@pytest.fixture
def debug_log(tmp_path: Path) -> Iterator[Path]:
    """Every logger at DEBUG into one file, as an operator chasing a problem would set it."""
    from services import parsing

    # A parse child forked before the handler was added would log nowhere: start a fresh one.
    child = getattr(parsing._children, "child", None)
    if child is not None:
        child.close(kill=True)
    path = tmp_path / "debug.log"
    handler = AppendPerRecord(path)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def leaks(text: str, secrets: set[str]) -> list[str]:
    """The secrets `text` quotes, case-insensitively. A secret that starts or ends with a digit
    (a patient id, a date) counts only where no other digit continues it: an id of seven digits
    inside a longer number (a task's run time 0.0478478169989s) is not that id."""
    return sorted(s for s in secrets if _quoted(s).search(text))


def _quoted(secret: str) -> re.Pattern[str]:
    before = r"(?<!\d)" if secret[:1].isdigit() else ""
    after = r"(?!\d)" if secret[-1:].isdigit() else ""
    return re.compile(before + re.escape(secret) + after, re.IGNORECASE)
