"""The wheel is what runs: every module and data file of the source is in it, and `dxa web`,
`dxa worker`, `dxa watch`, `dxa storescp` and `dxa serve`, started from the installed venv (which
cannot import the source tree), each answer: health endpoints, a C-ECHO, a first ingested file."""

from __future__ import annotations

import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.deploy.conftest import Installed, installed_env
from tests.integration.pipeline.support import ROOT, SAMPLES, Proc, free_port, wait_until

# The top-level packages pyproject.toml's discovery looks for; every tracked file below them
# (code and data alike) must be in the wheel.
PACKAGES = tuple(
    sorted(
        pattern.rstrip("*")
        for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["packages"][
            "find"
        ]["include"]
    )
)
SAMPLE = SAMPLES / "single" / "ge_sr" / "idxa_ap_spine_sr.dcm"

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def _source_files() -> set[str]:
    tracked = subprocess.run(["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=True)
    return {line for line in tracked.stdout.splitlines() if "__pycache__" not in line}


def test_the_wheel_holds_every_module_and_data_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = {name for name in wheel.namelist() if not name.startswith("dxa_monitor-")}
    missing = _source_files() - shipped
    assert not missing, f"left out of the wheel: {sorted(missing)}"
    assert "web/routes/patients.py" in shipped and "settings/monitoring.toml" in shipped


def test_the_installed_venv_cannot_see_the_source_tree(installed: Installed, run_dir: Path) -> None:
    probe = "import sys, web.routes, dxa, db.migrations; print(web.routes.__file__); print(sys.path)"
    out = subprocess.run(
        [str(installed.bin / "python"), "-c", probe],
        cwd=run_dir,
        env=installed_env(installed),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    where, path = out.stdout.splitlines()
    assert Path(where).is_relative_to(installed.site_packages)
    assert str(ROOT) not in path


def _sqlite_count(db: Path, sql: str) -> int:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar() or 0)
    except Exception:
        return 0
    finally:
        engine.dispose()


def _ingested(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM source_files WHERE status = 'ingested'")).scalar() or 0)
    finally:
        engine.dispose()


def test_every_process_of_the_install_answers(
    installed: Installed, run_dir: Path, pg_url: str, redis_db: str, logs: Path, tmp_path: Path
) -> None:
    data, inbox = tmp_path / "data", tmp_path / "inbox"
    web_port, scp_port, serve_port = free_port(), free_port(), free_port()
    scaled = installed_env(
        installed,
        DXA_DATABASE_URL=pg_url,
        DXA_BROKER_URL=redis_db,
        DXA_DATA_DIR=str(data),
        DXA_INBOX=str(inbox),
        DXA_PORT=str(web_port),
        DXA_SECRET_KEY="wheel-test-secret-key-0123456789",
        DXA_STORESCP_PORT=str(scp_port),
        DXA_STORESCP_ALLOWED_AES="LUNAR1",
        DXA_SCAN_INTERVAL_S="0.5",
        DXA_MIN_FILE_AGE_S="0.5",
    )
    embedded_data = tmp_path / "embedded"
    embedded = installed_env(
        installed,
        DXA_DATA_DIR=str(embedded_data),
        DXA_PORT=str(serve_port),
        DXA_SCAN_INTERVAL_S="0.5",
        DXA_MIN_FILE_AGE_S="0.5",
    )
    dxa = str(installed.bin / "dxa")
    procs = {
        name: Proc([dxa, *argv], env, logs / f"{name}.log", cwd=run_dir)
        for name, argv, env in [
            ("web", ["web"], scaled),
            ("worker", ["worker", "--concurrency", "1"], scaled),
            ("watch", ["watch"], scaled),
            ("storescp", ["storescp"], scaled),
            ("serve", ["serve"], embedded),
        ]
    }

    def health(service: str) -> bool:
        for name, proc in procs.items():
            if not proc.alive():
                raise AssertionError(f"dxa {name} exited:\n{proc.log()[-3000:]}")
        checked = subprocess.run([dxa, "health", service], cwd=run_dir, env=scaled, capture_output=True, timeout=60)
        return checked.returncode == 0

    try:
        for proc in procs.values():
            proc.start()
        for service in ("web", "storescp", "watch", "worker"):
            wait_until(lambda s=service: health(s), 120, f"`dxa health {service}` of the installed {service}", every=1)
        embedded_health = installed_env(installed, DXA_DATA_DIR=str(embedded_data), DXA_PORT=str(serve_port))
        wait_until(
            lambda: (
                subprocess.run([dxa, "health", "web"], cwd=run_dir, env=embedded_health, capture_output=True).returncode
                == 0
            ),
            120,
            "the embedded server's /healthz",
            every=1,
        )

        # A first job in each mode: the sample dropped into each inbox ends ingested.
        for folder in (inbox, embedded_data / "inbox"):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "first.dcm.part").write_bytes(SAMPLE.read_bytes())
            (folder / "first.dcm.part").rename(folder / "first.dcm")
        wait_until(lambda: _ingested(pg_url) == 1, 120, "the installed worker to ingest the first file", every=1)
        wait_until(
            lambda: (
                _sqlite_count(embedded_data / "dxa.db", "SELECT count(*) FROM source_files WHERE status = 'ingested'")
                == 1
            ),
            120,
            "the installed embedded server to ingest the first file",
            every=1,
        )
    finally:
        for proc in procs.values():
            proc.stop()
