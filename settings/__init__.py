"""One typed, validated settings object, read from the environment (README, "Configuration").

Every process (embedded server, Celery worker, web app, CLI) builds its settings here and nowhere
else. This package sits at the bottom of the import graph (it imports the standard library,
pydantic and, for `settings.monitoring`, the pure `monitor` core), so every layer may read it.

Secrets may come from files (`DXA_SECRET_KEY_FILE=/run/secrets/key`), the usual way under
docker-compose, so they never have to sit in the environment.
"""

from __future__ import annotations

import ipaddress
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_FILE_VARIANTS = (
    "DXA_DATABASE_URL",
    "DXA_BROKER_URL",
    "DXA_SECRET_KEY",
    "DXA_DEMO_PASSWORD",
    "DXA_ADMIN_PASSWORD",
    "DXA_METRICS_TOKEN",
)


def _read_file_variants() -> dict[str, str]:
    """`DXA_X_FILE=path` stands for `DXA_X=<contents of path>` (trailing newline dropped)."""
    values: dict[str, str] = {}
    for name in _FILE_VARIANTS:
        path = os.environ.get(f"{name}_FILE")
        if path and name not in os.environ:
            values[name.removeprefix("DXA_").lower()] = Path(path).read_text(encoding="utf-8").strip()
    return values


def _parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip())
    except ValueError as exc:
        raise ValueError(f"DXA_METRICS_ALLOW: {exc}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DXA_", extra="ignore", frozen=True)

    data_dir: Path = Path("var")
    inbox: Path | None = None
    archive: Path | None = None  # default <data_dir>/archive; compose puts it on a host folder
    # Where a claimed file's bytes wait for a worker: "folder" (work/ under the data folder, which
    # every worker must share with the watcher: one host, or a shared volume) or "database"
    # (PostgreSQL, by SHA-256: workers on any host; the watcher's host keeps archive copies).
    file_store: Literal["folder", "database"] = "folder"
    database_url: str | None = None
    broker_url: str | None = None  # unset = embedded mode, no broker
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str | None = None
    demo_user: str = "demo"
    demo_password: str | None = None  # embedded mode only (`dxa serve`)
    # The first administrator, created on first start when no account exists (never a default
    # password: the password comes from DXA_ADMIN_PASSWORD_FILE, a docker secret).
    admin_user: str | None = None
    admin_password: str | None = None

    # parsing limits (per file)
    max_file_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_pdf_pages: int = Field(default=40, gt=0)
    parse_timeout_s: float = Field(default=60.0, gt=0)
    parse_memory_mb: int = Field(default=1024, gt=0)
    max_attempts: int = Field(default=3, gt=0)  # a file that kills its worker this often is quarantined

    # watched folder
    scan_interval_s: float = Field(default=2.0, gt=0)
    min_file_age_s: float = Field(default=2.0, ge=0)

    # DICOM receiver
    storescp_ae_title: str = "DXAMONITOR"
    storescp_host: str = "127.0.0.1"  # compose sets 0.0.0.0 inside the container
    storescp_port: int = 11112
    storescp_allowed_aes: str = ""  # comma-separated calling AE titles; others are refused at association
    storescp_max_associations: int = Field(default=64, ge=1)

    monitoring_config: Path | None = None  # a TOML file overriding settings/monitoring.toml

    # web sign-in: a session ends after this long unused, and this long after sign-in whatever
    # happens; failed sign-ins within the window lock the name typed, or the client address
    session_idle_minutes: float = Field(default=30.0, gt=0)
    session_max_hours: float = Field(default=8.0, gt=0)
    signin_window_minutes: float = Field(default=15.0, gt=0)
    signin_max_failures_per_account: int = Field(default=5, gt=0)
    signin_max_failures_per_address: int = Field(default=20, gt=0)
    # Password checks (Argon2: 64 MiB and a good fraction of a CPU second each) run this many at a
    # time per web process; other sign-ins wait their turn up to signin_queue_seconds, then are
    # asked to try again in a moment (HTTP 503) instead of all slowing the machine down together.
    signin_concurrency: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2), ge=1)
    signin_queue_seconds: float = Field(default=30.0, gt=0)

    # Prometheus /metrics: with a token, a scraper sends `Authorization: Bearer <token>`; without
    # one, only the addresses or networks listed here may read it (default: this host only).
    metrics_token: str | None = None
    metrics_allow: str = "127.0.0.1,::1"

    @field_validator("data_dir", "inbox", "archive", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("metrics_allow", mode="after")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        _parse_networks(value)  # an address that is not one fails at start, not at the first scrape
        return value

    @property
    def metrics_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return _parse_networks(self.metrics_allow)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.database_url is not None and not self.database_url.strip():
            raise ValueError("DXA_DATABASE_URL is set but empty")
        return self

    @property
    def inbox_dir(self) -> Path:
        return self.inbox or self.data_dir / "inbox"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def archive_dir(self) -> Path:
        return self.archive or self.data_dir / "archive"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'dxa.db'}"

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def allowed_ae_titles(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.storescp_allowed_aes.split(",") if t.strip())


def load_settings() -> Settings:
    return Settings(**_read_file_variants())  # type: ignore[arg-type]
