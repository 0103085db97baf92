"""Rows a repository keeps for the rest of the current transaction (machines read or created for a
batch, patients locked by it): valid exactly as long as the transaction that read or locked them,
so a new transaction starts with an empty dict."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session


def transaction_cache(session: Session, key: str) -> dict[Any, Any]:
    transaction = session.get_transaction()
    held = session.info.get(key)
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        session.info[key] = held
    cache: dict[Any, Any] = held[1]
    return cache
