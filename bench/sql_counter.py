"""Count SQL statements and commits in a service process we start (a Celery worker, `dxa watch`)
for bench/pipeline.py: SQLAlchemy's engine events, listened to on the `Engine` class, so every
engine the process (and each forked pool process) makes is counted. Each process writes its own
counts to `<dir>/<pid>.json` twice a second; the bench sums them after the services stopped.

    python bench/sql_counter.py DIR celery -A workers.celery_app worker ...
    python bench/sql_counter.py DIR dxa watch
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_counts = {"statements": 0, "commits": 0}
_folder: list[Path] = []
_writing: set[int] = set()  # pids whose writer thread runs


def _statement(*_: Any, **__: Any) -> None:
    _counts["statements"] += 1
    if os.getpid() not in _writing:  # started lazily: a parse child, which runs no SQL, gets none
        _writing.add(os.getpid())
        _writer(_folder[0])


def _commit(*_: Any, **__: Any) -> None:
    _counts["commits"] += 1


def _writer(folder: Path) -> None:
    def loop() -> None:
        path = folder / f"{os.getpid()}.json"
        while True:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(_counts))
            os.replace(tmp, path)
            threading.Event().wait(0.5)

    threading.Thread(target=loop, daemon=True, name="sql-counter").start()


def _after_fork() -> None:
    _counts.update(statements=0, commits=0)  # a forked child counts only its own statements


def install(folder: Path) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    folder.mkdir(parents=True, exist_ok=True)
    event.listen(Engine, "before_cursor_execute", _statement)
    event.listen(Engine, "commit", _commit)
    _folder.append(folder)
    os.register_at_fork(after_in_child=_after_fork)


def totals(folder: Path) -> dict[str, int]:
    out = {"statements": 0, "commits": 0}
    for path in folder.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key in out:
            out[key] += int(data.get(key, 0))
    return out


def main() -> None:
    folder, program, *args = sys.argv[1:]
    sys.path.insert(0, str(ROOT))
    install(Path(folder))
    sys.argv = [program, *args]
    if program == "celery":
        from celery.__main__ import main as celery_main

        celery_main()
    else:
        from dxa.cli import main as dxa_main

        sys.exit(dxa_main())


if __name__ == "__main__":
    main()
