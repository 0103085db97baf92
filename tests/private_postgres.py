"""A PostgreSQL server of our own (initdb in a temporary folder, a free port, trust auth), to stop
and restart freely: the machine's shared server at 127.0.0.1:5432 serves other people's tests and
must never be restarted. Used by the fault tests and `bench/soak.py`.

initdb and the server refuse to run as root; as root they run as the `postgres` account.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def available() -> bool:
    return _bindir() is not None and (os.geteuid() != 0 or _account() is not None)


def _account() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """`start()` makes the cluster on first use; `restart()` stops it (fast shutdown: every
    connection is ended) and starts it again; `url(db)` is a SQLAlchemy URL for one database."""

    def __init__(self, base: Path | None = None) -> None:
        bindir = _bindir()
        if bindir is None:
            raise FileNotFoundError("pg_ctl")
        self.bin = bindir
        self.base = Path(tempfile.mkdtemp(prefix="dxa-pg-", dir=base))
        os.chmod(self.base, 0o755)
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log = self.base / "postgres.log"
        self.port = _free_port()
        self._user = _account() if os.geteuid() == 0 else None
        self._made = False

    def _run(self, *argv: str, timeout: float = 120) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self._user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _make(self) -> None:
        self.socket_dir.mkdir()
        self.log.touch()
        if self._user is not None:
            for path in (self.base, self.socket_dir, self.log):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._made = True

    def start(self) -> None:
        if not self._made:
            self._make()
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c max_connections=200 -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, down_s: float = 0.0) -> None:
        """A server restart as an operator or an upgrade does it: every connection ends."""
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        if self._made:
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
