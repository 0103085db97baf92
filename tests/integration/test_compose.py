"""docker-compose.yml is valid and has the shape issue 4 asks for (no Docker engine runs here:
`config` only parses, interpolates and validates)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "redis", "migrate", "web", "worker", "beat", "watch", "storescp"}
APP_SERVICES = {"web", "worker", "beat", "watch", "storescp"}
HEALTHCHECKED = SERVICES - {"migrate"}


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def compose_config() -> dict[str, Any]:
    """docker-compose.yml as `docker compose config` resolves it (anchors, defaults, paths)."""
    import yaml

    command = _compose_command()
    if command is None:
        skip_or_fail("neither `docker compose` nor `docker-compose` is installed")
        raise AssertionError  # unreachable: skip_or_fail raises
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = yaml.safe_load(result.stdout)
    return data


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


def test_compose_has_every_service(config: dict[str, Any]) -> None:
    assert set(config["services"]) >= SERVICES


def test_long_running_services_have_healthchecks(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in HEALTHCHECKED:
        check = services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_services_start_only_on_healthy_dependencies(config: dict[str, Any]) -> None:
    services = config["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(services["migrate"].get("restart", "no")) == "no", "migrate is a one-shot"
    for name in APP_SERVICES:
        deps = services[name].get("depends_on") or {}
        assert deps.get("postgres", {}).get("condition") == "service_healthy", name
        assert deps.get("redis", {}).get("condition") == "service_healthy", name
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name
        assert services[name]["environment"].get("DXA_BROKER_URL", "").startswith("redis://"), name


def test_worker_can_be_scaled(config: dict[str, Any]) -> None:
    """`--scale worker=N` fails on a fixed container name or a published host port."""
    worker = config["services"]["worker"]
    assert "container_name" not in worker and not worker.get("ports")


def _binds(service: dict[str, Any]) -> dict[str, Any]:
    return {
        (v["target"] if isinstance(v, dict) else v.split(":")[1]): v
        for v in service.get("volumes") or []
        if (v.get("type") == "bind" if isinstance(v, dict) else v.startswith("/"))
    }


def test_host_folders_only_where_needed_and_secrets_are_files(config: dict[str, Any]) -> None:
    services = config["services"]
    watch = services["watch"]["environment"]
    assert {watch["DXA_INBOX"], watch["DXA_ARCHIVE"]} <= set(_binds(services["watch"]))
    assert services["storescp"]["environment"]["DXA_INBOX"] in _binds(services["storescp"])
    for name in ("worker", "web", "beat"):  # workers on any host: no folder shared with the watcher
        assert not services[name].get("volumes"), name
        assert services[name]["environment"]["DXA_FILE_STORE"] == "database", name
    for name in APP_SERVICES | {"migrate"}:
        env = services[name]["environment"]
        assert "DXA_SECRET_KEY" not in env and "DXA_DATABASE_URL" not in env, name
        assert env["DXA_SECRET_KEY_FILE"].startswith("/run/secrets/"), name
    migrate = services["migrate"]["environment"]
    assert migrate["DXA_ADMIN_USER"] and migrate["DXA_ADMIN_PASSWORD_FILE"].startswith("/run/secrets/")
    assert "DXA_ADMIN_PASSWORD" not in migrate and "DXA_DEMO_PASSWORD" not in str(config)
