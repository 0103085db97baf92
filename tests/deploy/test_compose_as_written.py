"""docker-compose.yml, run as written on this machine (there is no Docker engine here).

`docker-compose config` resolves the file (anchors, defaults, secrets, volumes); every dxa service
is then started with its command and environment as written, from the installed wheel (what the
image holds), in the order its `depends_on` conditions give: `migrate` to completion first, then
web, worker, beat, watch and storescp. Each service's own health check, as written, must pass.
A sample dropped into the host inbox folder must then show on the dashboard's API, signed in as
the first administrator the `migrate` service created from the secrets.

The only changes made to what is written are those a container runtime would make, all in
`Rewrites` below: the host names `postgres` and `redis` become this machine's servers (a
throwaway database and Redis database number), container ports become free local ports, a bind to
0.0.0.0 becomes 127.0.0.1, `/run/secrets/NAME` becomes a file the test writes, each volume's
mount point becomes a temporary folder (one per named volume or host folder, shared by the
services that share it, as in compose), and a container path with no volume a folder private to
that service (the container's own filesystem: the workers share nothing with the watcher).
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.deploy.conftest import Installed, installed_env
from tests.integration.pipeline.support import ROOT, SAMPLES, Proc, free_port, wait_until
from tests.integration.test_compose import compose_config

SAMPLE = SAMPLES / "single" / "ge_sr" / "idxa_ap_spine_sr.dcm"
SAMPLE_PATIENT = "QH3877526"
INFRASTRUCTURE = {"postgres", "redis"}  # this machine's servers stand in for them

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@dataclass
class Rewrites:
    """Every difference between a container and this machine, in one place."""

    database_url: str  # the test database, standing in for postgres:5432/dxa
    redis_url: str  # the test's Redis database, standing in for redis:6379/0
    root: Path  # where secrets and volumes live
    ports: dict[str, str] = field(default_factory=dict)  # container port -> free local port
    mounts: dict[str, dict[str, Path]] = field(default_factory=dict)  # service -> target -> folder

    def secret_file(self, name: str) -> Path:
        return self.root / "secrets" / name

    def write_secrets(self, config: dict[str, Any]) -> dict[str, str]:
        """The secrets compose declares, with this machine's values; returns their contents."""
        example = make_url((ROOT / "secrets" / "database_url.example").read_text("utf-8").strip())
        test = make_url(self.database_url)
        database = example.set(host=test.host, port=test.port, database=test.database, username=test.username)
        database = database.set(password=test.password)
        values = {
            "database_url": database.render_as_string(hide_password=False),
            "secret_key": secrets.token_urlsafe(32),
            "admin_password": secrets.token_urlsafe(12),
            "postgres_password": "unused-here",
        }
        assert set(config["secrets"]) == set(values), "a new secret: give it a value here"
        for name, value in values.items():
            path = self.secret_file(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n", encoding="utf-8")
        return values

    def map_service(self, name: str, service: dict[str, Any]) -> None:
        for port in service.get("ports") or []:
            target = str(port["target"]) if isinstance(port, dict) else str(port).rsplit(":", 1)[-1]
            self.ports.setdefault(target, str(free_port()))
        mounts: dict[str, Path] = {}
        for volume in service.get("volumes") or []:
            source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
            key = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.strip("/"))
            folder = self.root / "volumes" / key
            folder.mkdir(parents=True, exist_ok=True)
            mounts[target] = folder
        # A container path with no volume is the container's own filesystem: a private folder.
        for value in (service.get("environment") or {}).values():
            text = str(value or "")
            container_path = text.startswith("/") and not text.startswith("/run/secrets/")
            if container_path and not any(text == t or text.startswith(t + "/") for t in mounts):
                mounts[text] = self.root / "containers" / name / text.strip("/").replace("/", "_")
                mounts[text].mkdir(parents=True, exist_ok=True)
        self.mounts[name] = mounts

    def value(self, service: str, text: str) -> str:
        if text.startswith("/run/secrets/"):
            return str(self.secret_file(text.removeprefix("/run/secrets/")))
        if text.startswith("redis://redis:6379"):
            return self.redis_url
        if text == "0.0.0.0":
            return "127.0.0.1"
        if text in self.ports:
            return self.ports[text]
        for target, folder in self.mounts.get(service, {}).items():
            if text == target or text.startswith(target + "/"):
                return str(folder) + text[len(target) :]
        return text

    def argv(self, service: str, command: list[str] | str) -> list[str]:
        words = shlex.split(command) if isinstance(command, str) else list(command)
        return [self.value(service, w) for w in words]

    def env(self, service: str, environment: dict[str, Any]) -> dict[str, str]:
        return {k: self.value(service, "" if v is None else str(v)) for k, v in environment.items()}


def _healthcheck_argv(rewrites: Rewrites, service: str, test: list[str] | str) -> list[str]:
    words = shlex.split(test) if isinstance(test, str) else list(test)
    if words[0] == "CMD-SHELL":
        return ["sh", "-c", " ".join(words[1:])]
    return rewrites.argv(service, words[1:] if words[0] == "CMD" else words)


def _starting_order(services: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in services[name].get("depends_on") or {}:
            visit(dep)
        order.append(name)

    for name in sorted(services):
        visit(name)
    return [n for n in order if n not in INFRASTRUCTURE]


def _sign_in(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30, follow_redirects=False)
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, "no CSRF token on the sign-in page"
    answer = client.post("/login", data={"username": username, "password": password, "csrf_token": token.group(1)})
    assert answer.status_code == 303, f"sign-in refused: {answer.status_code}"
    return client


def test_compose_services_run_as_written_and_a_dropped_file_reaches_the_dashboard(
    installed: Installed, run_dir: Path, pg_url: str, redis_db: str, logs: Path, tmp_path: Path
) -> None:
    config = compose_config()
    services = config["services"]
    rewrites = Rewrites(database_url=pg_url, redis_url=redis_db, root=tmp_path / "compose")
    secret_values = rewrites.write_secrets(config)
    for name, service in services.items():
        if name not in INFRASTRUCTURE:
            rewrites.map_service(name, service)

    procs: dict[str, Proc] = {}
    envs: dict[str, dict[str, str]] = {}
    figures: dict[str, float] = {}
    started = time.monotonic()
    try:
        for name in _starting_order(services):
            service = services[name]
            env = installed_env(installed, **rewrites.env(name, service.get("environment") or {}))
            envs[name] = env
            proc = Proc(rewrites.argv(name, service["command"]), env, logs / f"{name}.log", cwd=run_dir).start()
            procs[name] = proc
            if str(service.get("restart", "no")) == "no":  # a one-shot the others wait for
                assert proc.popen is not None
                code = proc.popen.wait(timeout=180)
                assert code == 0, f"{name} exited {code}:\n{proc.log()[-3000:]}"
                figures[f"{name} done"] = time.monotonic() - started

        for name, proc in procs.items():
            check = services[name].get("healthcheck")
            if check is None:
                assert str(services[name].get("restart", "no")) == "no", f"{name} has no health check"
                continue
            argv = _healthcheck_argv(rewrites, name, check["test"])

            def healthy(name: str = name, proc: Proc = proc, argv: list[str] = argv) -> bool:
                if not proc.alive():
                    raise AssertionError(f"{name} exited:\n{proc.log()[-3000:]}")
                return (
                    subprocess.run(argv, cwd=run_dir, env=envs[name], capture_output=True, timeout=60).returncode == 0
                )

            wait_until(healthy, 150, f"the health check of {name}, as written", every=2)
            figures[f"{name} healthy"] = time.monotonic() - started

        # A department drops a file into the host inbox folder the compose file names.
        inbox = rewrites.mounts["watch"][services["watch"]["environment"]["DXA_INBOX"]]
        (inbox / "scan.dcm.part").write_bytes(SAMPLE.read_bytes())
        (inbox / "scan.dcm.part").rename(inbox / "scan.dcm")
        dropped = time.monotonic()

        port = rewrites.ports["8000"]
        admin = services["migrate"]["environment"]["DXA_ADMIN_USER"]
        client = _sign_in(f"http://127.0.0.1:{port}", admin, secret_values["admin_password"])

        def on_dashboard() -> bool:
            answer = client.get("/api/patients", params={"q": SAMPLE_PATIENT})
            assert answer.status_code == 200, answer.text[:300]
            return any(p.get("patient_id") == SAMPLE_PATIENT for p in answer.json()["patients"])

        wait_until(on_dashboard, 120, "the dropped sample's patient on the dashboard API", every=1)
        figures["drop to dashboard"] = time.monotonic() - dropped
        figures.update(installed.figures)
        print("\ncompose as written, seconds:", ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
        archive = rewrites.mounts["watch"][services["watch"]["environment"]["DXA_ARCHIVE"]]
        wait_until(lambda: bool(list(archive.rglob("*.dcm"))), 60, "the ingested file in the host archive folder")
    finally:
        for proc in reversed(list(procs.values())):
            proc.stop()
