"""Intake of a file: claim it out of the inbox (or copy it, for back-loading) into `work/`, then
register its SHA-256 together with its `ingest_file` job in one commit.

A crash between the claim and the commit leaves an unregistered file in `work/`, which
`services.recovery.recover_files` registers; the same bytes arriving twice are recognised by their
hash and the second copy dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.blobs import put_blob
from db.files import register_new_source_files, register_source_file, reset_for_reprocess
from db.jobs import enqueue_ingests
from db.models import Job, SourceFile
from services.bytestore import database_path, uses_database
from services.context import Context
from services.files import (
    Moves,
    claim_by_copy,
    claim_by_rename,
    display_name,
    move_durably,
    open_regular,
    read_error_words,
    sha256_of,
)
from services.inbox_entries import set_aside_unreadable
from services.logsafe import describe
from services.outcomes import PARSER_VERSION, STORE_REFUSED, WORKER_CRASH
from services.queue import Work, unit_of_work

log = logging.getLogger(__name__)


class UnreadableClaim(Exception):
    """A claimed file whose bytes could not be read (an input/output error, a permission, a pipe
    swapped in after the scan): no hash, so no row. Tried again it would fail again, so it is not
    given back to the inbox: the watcher's is set aside for QA (`services.inbox_entries.
    set_aside_unreadable`), a back-load's copy removed. The message says why in plain words, never
    the path."""

    def __init__(self, cause: OSError) -> None:
        self.words = read_error_words(cause)
        super().__init__(f"the file could not be read: {self.words}")


@dataclass(frozen=True)
class IntakeResult:
    source_file_id: int
    outcome: Literal["queued", "duplicate"]
    job_id: int | None
    prior_status: str | None = None


def intake(ctx: Context, path: Path, *, copy: bool) -> IntakeResult:
    """Claim one file and register it with its job."""
    result = intake_many(ctx, [path], copy=copy)[0]
    if isinstance(result, Exception):
        raise result
    return result


def intake_many(ctx: Context, paths: Sequence[Path], *, copy: bool) -> list[IntakeResult | Exception]:
    """Claim several files (a scan of the inbox, a chunk of a back-load) and register them with
    their jobs in one transaction: work/ is flushed once for all the claims, and one commit
    registers them. Each path gets its result, or the exception that stopped it (a file taken by
    another watcher: FileNotFoundError); a claim that could not be registered is undone, so the
    file is seen again at the next scan rather than waiting in work/ for the next start-up."""
    claimed, failed = claim_many(ctx, paths, copy=copy)
    registered = iter(register_claims(ctx, claimed, copy=copy))  # in the order of `paths`, less the failed
    return [failed[path] if path in failed else next(registered) for path in paths]


Claim = tuple[Path, Path]  # where a file was (the inbox, the archive being back-loaded), its copy in work/


def claim_many(ctx: Context, paths: Sequence[Path], *, copy: bool) -> tuple[list[Claim], dict[Path, Exception]]:
    """The first half of `intake_many`, no database work: the files renamed (or copied) into
    work/, which is flushed once; the claims, and the exception of each path that could not be
    claimed. The embedded watcher on SQLite hands the claims to the one writer, which registers
    them (`register_claims`): a second writer would only queue on the database's lock."""
    work_dir = ctx.settings.work_dir
    moves = Moves()
    claimed: list[Claim] = []
    failed: dict[Path, Exception] = {}
    for path in paths:
        try:
            claimed.append((path, claim_by_copy(path, work_dir) if copy else claim_by_rename(path, work_dir, moves)))
        except Exception as exc:
            failed[path] = exc
    moves.sync()
    return claimed, failed


def register_claims(ctx: Context, claimed: Sequence[Claim], *, copy: bool) -> list[IntakeResult | Exception]:
    """The second half of `intake_many` (and the back-load's, whose copier threads claim by copy):
    the claims registered in one transaction or, should that fail, one at a time, a claim that
    cannot be registered undone (by its original path). A result per claim, in order: the same
    file given twice (`dxa ingest a a`) has two claims, each with its outcome."""
    if len(claimed) > 1:
        try:
            return list(register_claimed_many(ctx, [(work, display_name(path.name)) for path, work in claimed]))
        except Exception as exc:
            log.info("%d claims could not be registered together (%s); one at a time", len(claimed), describe(exc))
    results: list[IntakeResult | Exception] = []
    for path, work in claimed:  # one at a time: a file the database refuses sinks only itself
        try:
            results.append(register_claimed(ctx, work, display_name(path.name)))
        except UnreadableClaim as exc:
            if copy:  # the original stays where it was: the back-load reports it
                work.unlink(missing_ok=True)
            else:
                set_aside_unreadable(ctx, path, work, exc.words)
            results.append(exc)
        except Exception as exc:
            _undo_claim(path, work, copy=copy)
            results.append(exc)
    return results


def _undo_claim(path: Path, work_path: Path, *, copy: bool) -> None:
    if copy:
        work_path.unlink(missing_ok=True)
    elif not path.exists():
        with contextlib.suppress(OSError):
            move_durably(work_path, path)


def register_claimed(ctx: Context, work_path: Path, original_name: str) -> IntakeResult:
    """Register a claimed file with its job. In the database mode (`services.bytestore`) its bytes
    are committed with it, and the local copy is dropped once they are."""
    return register_claimed_many(ctx, [(work_path, original_name)])[0]


def register_claimed_many(ctx: Context, claimed: Sequence[tuple[Path, str]]) -> list[IntakeResult]:
    """`register_claimed` for several claimed files in one transaction (all or none)."""
    in_db = uses_database(ctx)
    done: list[_Registered] = []
    with unit_of_work(ctx) as work:
        new = {} if in_db or len(claimed) < 2 else _register_new(work, claimed)
        for work_path, original_name in claimed:
            done.append(new.get(work_path) or _register(work, work_path, original_name, in_db=in_db))
    for result, kept_at, work_path, has_data in done:
        # The same bytes are already kept (archived, quarantined or being processed): this copy
        # adds nothing, and keeping it would make `work/` grow with every re-drop.
        spare = result.outcome == "duplicate" or result.prior_status is not None or has_data
        if spare and kept_at != str(work_path):
            work_path.unlink(missing_ok=True)
    return [result for result, *_ in done]


_Registered = tuple[IntakeResult, str | None, Path, bool]  # result, where the bytes are kept, the claim, bytes in db


def _read_claim(work_path: Path, *, in_db: bool) -> tuple[str, int, bytes | None]:
    """(SHA-256, size, the bytes in the database mode) of a claimed file, or `UnreadableClaim`."""
    try:
        if in_db:
            with open_regular(work_path) as fh:
                data = fh.read()
            return hashlib.sha256(data).hexdigest(), len(data), data
        return sha256_of(work_path), work_path.stat().st_size, None
    except OSError as exc:
        raise UnreadableClaim(exc) from exc


def _register(work: Work, work_path: Path, original_name: str, *, in_db: bool) -> _Registered:
    sha, size, data = _read_claim(work_path, in_db=in_db)
    stored_at = database_path(sha) if data is not None else str(work_path)
    if data is not None:
        put_blob(work.session, sha, data)
    reg = register_source_file(
        work.session,
        sha256=sha,
        original_name=original_name,
        size_bytes=size,
        stored_path=stored_at,
    )
    kept_at = reg.file.stored_path
    if reg.outcome == "duplicate" and _worth_another_try(work.session, reg.file):
        prior = reg.file.status
        reset_for_reprocess(work.session, reg.file)
        if data is not None or not (kept_at and Path(kept_at).is_file()):  # the kept copy is gone
            reg.file.stored_path = kept_at = stored_at
        result = IntakeResult(reg.file.id, "queued", work.queue_ingest(reg.file.id), prior)
    elif reg.outcome == "duplicate":
        result = IntakeResult(reg.file.id, "duplicate", None, reg.file.status)
    else:
        result = IntakeResult(reg.file.id, "queued", work.queue_ingest(reg.file.id))
    return result, kept_at, work_path, data is not None


def _register_new(work: Work, claimed: Sequence[tuple[Path, str]]) -> dict[Path, _Registered]:
    """The claims whose bytes are new to the database, registered with their jobs in two
    statements (a back-load chunk, a busy inbox's scan); the others are left to `_register`."""
    first: dict[str, tuple[Path, str, int]] = {}
    for work_path, original_name in claimed:
        sha, size, _ = _read_claim(work_path, in_db=False)
        first.setdefault(sha, (work_path, original_name, size))  # the same bytes twice in one chunk: once
    files = [(sha, name, size, str(path)) for sha, (path, name, size) in first.items()]
    ids = register_new_source_files(work.session, files)
    jobs = enqueue_ingests(work.session, list(ids.values()))
    out: dict[Path, _Registered] = {}
    for sha, file_id in ids.items():
        work_path = first[sha][0]
        work.outbox.append((jobs[file_id], "ingest_file"))
        out[work_path] = (IntakeResult(file_id, "queued", jobs[file_id]), str(work_path), work_path, False)
    return out


# Quarantine reasons that say something about our process, not about the bytes.
_NOT_THE_FILES_FAULT = frozenset({WORKER_CRASH, STORE_REFUSED, "timeout", "memory", "crash", "parse_fault"})


def _worth_another_try(session: Session, file: SourceFile) -> bool:
    """Whether the same bytes dropped again should be processed again rather than answer
    `duplicate`: a file refused by an older parser, refused for a fault of ours (a crash, the
    database), or left `pending`/`processing` with no live job (an older version's stuck file)
    would otherwise never be looked at again. A refusal by this parser of these bytes stands."""
    if file.status == "quarantined":
        return file.parser_version != PARSER_VERSION or (file.reason_code or "") in _NOT_THE_FILES_FAULT
    if file.status in ("pending", "processing"):
        live = session.scalars(
            select(Job.id).where(Job.source_file_id == file.id, Job.state.in_(("queued", "running")))
        ).first()
        return live is None
    return False
