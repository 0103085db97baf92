"""The deployment tests run what ships: the project built into a wheel from the files the Docker
build copies (.dockerignore), installed without `-e` into a fresh virtual environment that cannot
see the source tree, and its `dxa` started as a hospital's processes would be.

The venv reuses pip's download cache, so after the first run the install costs no download; it
is built once per test session and shared by every test here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.pipeline.conftest import logs, pg_url, pytest_runtest_makereport, redis_db  # noqa: F401
from tests.integration.pipeline.support import ROOT

# What the Docker build leaves out (.dockerignore) is left out of the wheel built here too.
_IGNORED = [line.strip() for line in (ROOT / ".dockerignore").read_text("utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class Installed:
    bin: Path  # the fresh venv's bin/ (dxa, python, celery)
    wheel: Path
    site_packages: Path
    figures: dict[str, float]  # seconds: build, venv + install


def _copy_build_context(dest: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(ROOT)
        skipped = set()
        for name in names:
            path = (rel / name).as_posix()
            for pattern in _IGNORED:
                bare = pattern.removeprefix("**/")
                if Path(path).match(pattern) or name == bare or Path(name).match(bare):
                    skipped.add(name)
        return skipped

    shutil.copytree(ROOT, dest, ignore=ignore)


def build_and_install(workdir: Path) -> Installed:
    figures: dict[str, float] = {}
    context = workdir / "context"
    _copy_build_context(context)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(workdir / "dist"), "."],
        cwd=context,
        check=True,
        capture_output=True,
    )
    figures["build_wheel_s"] = time.monotonic() - started
    (wheel,) = (workdir / "dist").glob("dxa_monitor-*.whl")
    venv = workdir / "venv"
    started = time.monotonic()
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, capture_output=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    figures["venv_and_install_s"] = time.monotonic() - started
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Installed(venv / "bin", wheel, Path(site), figures)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return build_and_install(tmp_path_factory.mktemp("image"))


def installed_env(installed: Installed, **values: str) -> dict[str, str]:
    """A process environment that has the installed venv and nothing of ours: no DXA_ variable,
    no PYTHONPATH, PATH starting at the venv (so `dxa` and `celery` are the installed ones)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DXA_", "PYTHON", "VIRTUAL_ENV"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(str(ROOT))]
    env["PATH"] = os.pathsep.join([str(installed.bin), *path])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """The working directory of the installed processes: outside the source tree."""
    folder = tmp_path / "run"
    folder.mkdir()
    assert not folder.resolve().is_relative_to(ROOT)
    yield folder
