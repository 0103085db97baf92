"""Rows a transaction reads again and again, kept for the rest of that transaction: the files of
a stored batch share machines, whose rows each file would otherwise read once more (issue 13).
Kept in `session.info` with the transaction they belong to, so a later transaction of the same
session starts afresh. A savepoint rolled back must `forget` them: rows it added or changed are
gone. Nothing here commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

_KEY = "dxa_transaction_cache"


def cached(session: Session, name: str) -> dict[Any, Any]:
    """This transaction's cache called `name` (empty at first)."""
    transaction = session.get_transaction()
    entry = session.info.get(_KEY)
    if entry is None or entry[0] is not transaction:
        entry = session.info[_KEY] = (transaction, {})
    caches: dict[str, dict[Any, Any]] = entry[1]
    return caches.setdefault(name, {})


def forget(session: Session) -> None:
    """After a savepoint's rollback: read everything again."""
    session.info.pop(_KEY, None)
