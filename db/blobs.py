"""File bytes in the database, by SHA-256 (`db.models.FileBlob`). Nothing here commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import FileBlob, utcnow


def put_blob(session: Session, sha256: str, data: bytes) -> bool:
    """Keep `data` under its hash (one statement; only the hash comes back, not the bytes);
    False when those bytes are kept already."""
    values = {"sha256": sha256, "data": data, "size_bytes": len(data), "created_at": utcnow()}
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(FileBlob).values(**values).on_conflict_do_nothing(index_elements=["sha256"])
    return session.scalar(stmt.returning(FileBlob.sha256)) is not None


def get_blob(session: Session, sha256: str) -> bytes | None:
    data = session.scalar(select(FileBlob.data).where(FileBlob.sha256 == sha256))
    return bytes(data) if data is not None else None


def has_blob(session: Session, sha256: str) -> bool:
    return session.scalar(select(FileBlob.sha256).where(FileBlob.sha256 == sha256)) is not None
