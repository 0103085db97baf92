"""Intake of a file: claim it out of the inbox (or copy it, for back-loading) into `work/`, then
register its SHA-256 together with its `ingest_file` job in one commit.

A crash between the claim and the commit leaves an unregistered file in `work/`, which
`services.recovery.recover_files` registers; the same bytes arriving twice are recognised by their
hash and the second copy dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from db.files import register_source_file
from services.context import Context
from services.files import claim_by_copy, claim_by_rename, display_name, sha256_of
from services.queue import unit_of_work


@dataclass(frozen=True)
class IntakeResult:
    source_file_id: int
    outcome: Literal["queued", "duplicate"]
    job_id: int | None
    prior_status: str | None = None


def intake(ctx: Context, path: Path, *, copy: bool) -> IntakeResult:
    """Claim one file and register it with its job."""
    work_dir = ctx.settings.work_dir
    work_path = claim_by_copy(path, work_dir) if copy else claim_by_rename(path, work_dir)
    return register_claimed(ctx, work_path, display_name(path.name))


def register_claimed(ctx: Context, work_path: Path, original_name: str) -> IntakeResult:
    sha = sha256_of(work_path)
    with unit_of_work(ctx) as work:
        reg = register_source_file(
            work.session,
            sha256=sha,
            original_name=original_name,
            size_bytes=work_path.stat().st_size,
            stored_path=str(work_path),
        )
        kept_at = reg.file.stored_path
        if reg.outcome == "duplicate":
            result = IntakeResult(reg.file.id, "duplicate", None, reg.file.status)
        else:
            result = IntakeResult(reg.file.id, "queued", work.queue_ingest(reg.file.id))
    if result.outcome == "duplicate" and kept_at != str(work_path):
        # The same bytes are already kept (archived, quarantined or being processed): this
        # copy adds nothing, and keeping it would make `work/` grow with every re-drop.
        work_path.unlink(missing_ok=True)
    return result
