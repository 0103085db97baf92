"""Heartbeat files: a loop that is alive touches its file each turn; `dxa health` reads the age.

Kept in the data folder (never shared between two processes of one kind) rather than in /tmp,
where two deployments on one host would read each other's.
"""

from __future__ import annotations

import time
from pathlib import Path

from settings import Settings


def heartbeat_path(settings: Settings, service: str) -> Path:
    return settings.data_dir / "run" / f"{service}.alive"


def touch_heartbeat(settings: Settings, service: str) -> None:
    path = heartbeat_path(settings, service)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def heartbeat_fresh(settings: Settings, service: str, max_age_s: float) -> bool:
    try:
        return time.time() - heartbeat_path(settings, service).stat().st_mtime < max_age_s
    except FileNotFoundError:
        return False
