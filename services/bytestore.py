"""Where a claimed file's bytes wait for a worker (`DXA_FILE_STORE`).

- `folder` (the default, and the embedded mode's): in `work/` under the data folder; a worker
  opens the path and moves the file to `archive/` or `quarantine/` itself, so every worker shares
  the watcher's folders (one host, or a shared volume).
- `database` (the compose deployment's): the watcher puts the bytes in PostgreSQL (`db.blobs`,
  content-addressed) in the transaction that registers the file and drops its local copy. A
  worker reads them from there into a private temporary file for the parse child, and records
  the outcome as `stored_path = "database:<sha256>"` without touching any folder; the watcher's
  host then writes the archive or quarantine copy (`services.host_copies`). A worker thus needs the
  database and the broker, nothing else.

Why PostgreSQL rather than an S3-compatible store: the deployment already runs and backs up
PostgreSQL, DXA results are small (an SR or PDF is 0.05 to 2 MB, a department makes a few
thousand a year), the bytes are committed in the same transaction as the registration (no window
where a job exists and its bytes do not), and a hospital gets no new service to secure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from db.blobs import get_blob, has_blob
from services.context import Context
from services.files import safe_extension

IN_DATABASE = "database:"


def in_database(stored_path: str | None) -> bool:
    return bool(stored_path) and str(stored_path).startswith(IN_DATABASE)


def database_path(sha256: str) -> str:
    return f"{IN_DATABASE}{sha256}"


def uses_database(ctx: Context) -> bool:
    return ctx.settings.file_store == "database"


def kept_in_database(ctx: Context, session: Session, sha256: str) -> bool:
    """True when this process works in the database mode and the file's bytes are there (a file
    received before the switch to it has none, and keeps the folder semantics)."""
    return uses_database(ctx) and has_blob(session, sha256)


@contextmanager
def parse_copy(ctx: Context, sha256: str, stored_path: str, name: str) -> Iterator[str]:
    """A path the parse child can read: in the database mode a private temporary copy of the
    bytes (removed afterwards), else the file where it is."""
    data = None
    if uses_database(ctx):
        with ctx.sessions() as session:
            data = get_blob(session, sha256)
    if data is None:
        if in_database(stored_path):
            raise FileNotFoundError("the file's bytes are not in the database")
        yield stored_path
        return
    folder = ctx.settings.data_dir / "parse"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}{safe_extension(name)}"
    try:
        with path.open("wb") as fh:
            fh.write(data)
        del data
        yield str(path)
    finally:
        path.unlink(missing_ok=True)
