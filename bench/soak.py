"""Soak: hostile inputs and faults at volume (issue 11). Prints ONE table; not a test.

    make soak                                   # everything at full size (~15-20 min here)
    .venv/bin/python bench/soak.py --mutants 2000 --files 1000 --modes mutants,embedded

- mutants: N deterministic mutants of the shared samples (tests/hardening/mutants.py) through the
  real parse child with its limits: each must end as a report or a typed refusal;
- embedded: `dxa serve` (SQLite) takes N files (samples, re-drops, UID conflicts, variants and a
  share of mutants) dropped by a sender that keeps a backlog, plus symlinks, FIFOs and empty
  folders; meanwhile 50 signed-in users browse (asyncio, 127.0.0.1), another process holds the
  SQLite database locked, the inbox (a small tmpfs when run as root) fills up, and `dxa serve` is
  killed with -9 and restarted;
- celery: the same through `dxa watch` + a Celery worker with 2 processes on a private
  redis-server and a private PostgreSQL server (tests/private_postgres.py: initdb in the soak's
  temporary folder; the machine's shared server is never restarted), with `dxa web` serving the
  50 users; a pool process is killed with -9, the private Redis is restarted, the whole worker is
  killed with -9 and started again, the PostgreSQL server is restarted, and every connection of
  the database is ended with pg_terminate_backend.

Afterwards every file must be accounted for exactly once (archived, quarantined with a reason,
held for a person in the OCR verification queue, or a duplicate of one of those), no job left
running or queued, and no sample patient's name, ID, birth date or accession number in
any service log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from db.models import Job, SourceFile  # noqa: E402
from tests import private_postgres  # noqa: E402
from tests.hardening.conftest import AppendPerRecord, leaks  # noqa: E402
from tests.hardening.mutants import distinct_mutants, patient_strings  # noqa: E402
from tests.integration.pipeline.support import (  # noqa: E402
    SAMPLES,
    BatchFile,
    PrivateRedis,
    celery_worker,
    check_accounting,
    dxa,
    free_port,
    load_samples,
    make_batch,
    send_sweep,
    service_env,
    wait_until,
)
from tests.private_postgres import PrivatePostgres  # noqa: E402

PASSWORD = "soak-user-password-1"
# Quarantine reasons that name no fault of the file (services.intake._NOT_THE_FILES_FAULT): a
# mutant ending so is an untyped error that escaped the parser boundary, or a hang (timeout).
NOT_A_REFUSAL = frozenset({"worker_crash", "store_refused", "timeout", "memory", "crash", "parse_fault"})
# A person reads a page for a few seconds before the next click: 50 users make ~10 pages a second.
THINK_S = (2.0, 8.0)
PAGES = ["/patients", "/worklist", "/qa/ingest", "/qa/devices", "/qa/comparisons", "/patients?q=1"]


@dataclass
class Phase:
    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    files_in: int = 0
    accounted: int = 0
    # how the accounted files ended: archived, quarantined, held (for a person: a scan read by OCR
    # waits in the verification queue, issue 14), duplicates (re-drops of a file already kept)
    ends: dict[str, int] = field(default_factory=dict)
    faults: list[tuple[str, bool]] = field(default_factory=list)  # (fault, recovered)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    rss_mb: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)


def p95(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]:.2f}s"


def rss_mb(pid: int, *, pool: bool = False) -> float:
    """The process's resident memory, with its direct children for a Celery worker (the pool), but
    never the forked parse children, whose pages are shared with their parent (summing them would
    count the same memory several times)."""
    total = 0
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        if pool:
            total += sum(c.memory_info().rss for c in proc.children(recursive=False))
    return total / 2**20


# --------------------------------------------------------------------------- mutants


def run_mutants(count: int, secrets: set[str], log_path: Path) -> Phase:
    from ingest.errors import ParseError
    from ingest.parse import ParseLimits, parse_file
    from services.child import ChildFailed, ChildLimits, ReusableChild

    phase = Phase(f"parser: {count} distinct mutants")
    import logging

    handler = AppendPerRecord(log_path)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    limits = ParseLimits(today=date.today())
    child_limits = ChildLimits(timeout_s=30, memory_mb=1024)
    child = ReusableChild()
    times: list[float] = []
    messages: list[str] = []
    try:
        for m in distinct_mutants(SAMPLES, count):
            start = time.perf_counter()
            try:
                child.run(parse_file, (m.data, "mutant", limits), child_limits)
                phase.outcomes["report"] += 1
            except ParseError as exc:
                phase.outcomes[f"typed: {exc.code}"] += 1
                messages.append(exc.message)
            except ChildFailed as exc:
                phase.outcomes[f"UNTYPED child {exc.code}"] += 1
                kind = "hang" if exc.code == "timeout" else "untyped"
                phase.errors[f"{kind}: child {exc.code} ({m.label})"] += 1
            except Exception as exc:
                phase.outcomes[f"UNTYPED {type(exc).__name__}"] += 1
                phase.errors[f"untyped: {type(exc).__name__} ({m.label})"] += 1
            times.append(time.perf_counter() - start)
            phase.files_in += 1
    finally:
        child.close(kill=True)
        logging.getLogger().removeHandler(handler)
    phase.accounted = sum(phase.outcomes.values())
    phase.latencies["parse"] = times
    leaked = leaks(log_path.read_text("utf-8") if log_path.exists() else "", secrets)
    leaked += [s for msg in messages for s in leaks(msg, secrets)]
    phase.errors["patient data in log/refusal"] += len(set(leaked))
    return phase


# --------------------------------------------------------------------------- the batch and the sender


def build_batch(files: int) -> list[BatchFile]:
    samples = load_samples()
    share = max(1, files // 10)
    batch = make_batch(samples, files - share)
    for m in distinct_mutants(SAMPLES, files - len(batch), seed=7):
        batch.append(BatchFile(f"mutant/{m.operator}{m.index}_{abs(hash(m.sample)) % 10**6}.dcm", m.data, "mutant"))
    return batch


class Sender:
    """Drops the batch like a sender over a share: `<name>.part` then rename, never more than
    `backlog` files waiting; a full disk (ENOSPC) is waited out and retried, as a sender would."""

    def __init__(self, batch: list[BatchFile], inbox: Path, backlog: int = 300) -> None:
        self.batch, self.inbox, self.backlog = batch, inbox, backlog
        self.dropped: dict[str, float] = {}
        self.sent = 0
        self.enospc = 0
        self.in_inbox: set[Path] = set()  # dropped and perhaps not claimed yet
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _waiting(self) -> int:
        """How many of the files it dropped are still in the inbox: only those are looked at (a walk
        of the inbox, where every emptied sender folder stays, made the sender the bottleneck)."""
        return len(self.in_inbox) if len(self.in_inbox) < self.backlog else self.left()

    def left(self) -> int:
        with self.lock:
            self.in_inbox = {p for p in self.in_inbox if p.exists()}
            return len(self.in_inbox)

    def _run(self) -> None:
        for f in self.batch:
            while self._waiting() >= self.backlog:
                time.sleep(0.2)
            dest = self.inbox / f.rel
            while True:
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp = dest.with_name(dest.name + ".part")
                    tmp.write_bytes(f.data)
                    os.replace(tmp, dest)
                    break
                except OSError as exc:
                    if exc.errno != 28:  # ENOSPC
                        raise
                    self.enospc += 1
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                    time.sleep(0.5)
            self.dropped.setdefault(f.sha256, time.time())
            with self.lock:
                self.in_inbox.add(dest)
            self.sent += 1


def odd_entries(inbox: Path, count: int = 10) -> int:
    outside = inbox.parent / "outside"
    outside.mkdir(exist_ok=True)
    made = 0
    for i in range(count):
        kind = i % 3
        path = inbox / f"odd{i}"
        if kind == 0:
            os.symlink(outside / f"target{i}", path)
        elif kind == 1:
            os.mkfifo(path)
        else:
            path.mkdir()
        made += 1
    return made


def fill_disk(folder: Path) -> Path:
    filler = folder / ".filler"
    with filler.open("wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * (1 << 20))
    return filler


# --------------------------------------------------------------------------- users


async def browse(
    base: str, users: list[str], until: Callable[[], bool], phase: Phase, max_s: float, ramp_s: float
) -> None:
    """Each user behaves as a person: arrives at some moment within `ramp_s` (a department does not
    sign in within the same second), signs in once (waiting as asked when the page says to try
    again in a moment: 503 or 429 with Retry-After), then reads pages with the session cookie,
    a few seconds apart (THINK_S), until `until()`. Sign-ins and page views are timed apart: a sign-in is
    a deliberate Argon2 check, a page view must be fast."""
    import httpx

    pages: list[float] = []
    signins: list[float] = []  # from the first POST to signed in, waits included
    posts: list[float] = []  # each POST /login on its own
    phase.latencies["sign-in"] = signins
    phase.latencies["sign-in request"] = posts
    phase.latencies["page view"] = pages
    deadline = time.monotonic() + max_s

    def failed(what: str, exc: Exception, idle: float | None) -> None:
        phase.errors[f"user errors: {what} {type(exc).__name__}: {str(exc)[:60]}"] += 1
        if idle is not None:
            phase.notes.append(f"{what} {type(exc).__name__} on a connection idle {idle:.1f} s before the request")

    async def one(name: str, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, ramp_s))
        async with httpx.AsyncClient(base_url=base, timeout=60, follow_redirects=False) as client:
            last = time.monotonic()  # when this client's last response ended (its connection idles since)
            start = time.perf_counter()
            try:
                page = await client.get("/login")
                token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
                data = {"username": name, "password": PASSWORD, "csrf_token": token}
                while True:
                    sent = time.perf_counter()
                    signed = await client.post("/login", data=data)
                    posts.append(time.perf_counter() - sent)
                    last = time.monotonic()
                    if signed.status_code not in (429, 503) or time.monotonic() >= deadline:
                        break
                    # the queue of password checks was full: the page says to try again shortly
                    phase.outcomes[f"users: sign-ins asked to try again ({signed.status_code} + Retry-After)"] += 1
                    await asyncio.sleep(float(signed.headers.get("retry-after", "5")))
            except (httpx.HTTPError, IndexError) as exc:
                failed("sign-in", exc, time.monotonic() - last)
                return
            if signed.status_code != 303:
                phase.errors[f"user errors: sign-in {signed.status_code}"] += 1
                return
            signins.append(time.perf_counter() - start)
            phase.outcomes["users: signed in (once each)"] += 1
            first = True
            while first or (not until() and time.monotonic() < deadline):
                first = False
                path = rng.choice(PAGES)
                idle = time.monotonic() - last
                start = time.perf_counter()
                try:
                    response = await client.get(path)
                except httpx.HTTPError as exc:
                    failed(f"GET {path.split('?')[0]}", exc, idle)
                    continue
                finally:
                    last = time.monotonic()
                pages.append(time.perf_counter() - start)
                phase.outcomes["users: pages read"] += 1
                if response.status_code != 200:
                    phase.errors[f"user errors: GET {path.split('?')[0]} {response.status_code}"] += 1
                await asyncio.sleep(rng.uniform(*THINK_S))  # reading the page

    await asyncio.gather(*(one(name, random.Random(i)) for i, name in enumerate(users)))


def make_users(sessions: Any, count: int) -> list[str]:
    from db.accounts import create_user

    names = [f"soak{i:02d}" for i in range(count)]
    with sessions.begin() as session:
        for name in names:
            create_user(session, name, PASSWORD, "qa")
    return names


def users_thread(
    base: str, users: list[str], until: Callable[[], bool], phase: Phase, max_s: float, ramp_s: float
) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(browse(base, users, until, phase, max_s, ramp_s)), daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- accounting


def settle(phase: Phase, sessions: Any, data_dir: Path, inbox: Path, batch: list[BatchFile], sender: Sender) -> None:
    phase.files_in = len(batch)
    try:
        state = check_accounting(data_dir, inbox, batch, sessions)
        phase.ends = {
            "archived": len(state.archived),
            "quarantined": len(state.quarantined),
            "held": len(state.held),
            "duplicates": state.duplicates,
        }
        phase.accounted = sum(phase.ends.values())
    except AssertionError as exc:
        phase.errors["lost or doubled: accounting"] += 1
        phase.notes.append(str(exc)[:300])
    with sessions() as session:
        for status, n in session.execute(select(SourceFile.status, func.count()).group_by(SourceFile.status)):
            phase.outcomes[f"{status}"] += int(n)
        for code, n in session.execute(
            select(SourceFile.reason_code, func.count())
            .where(SourceFile.status == "quarantined")
            .group_by(SourceFile.reason_code)
        ):
            phase.outcomes[f"  quarantined: {code}"] += int(n)
            if code in NOT_A_REFUSAL:  # the file's fault was never named: an untyped error or a hang
                kind = "hang" if code == "timeout" else "untyped"
                phase.errors[f"{kind}: quarantined as {code}"] += int(n)
        later = session.scalar(
            select(func.count())
            .select_from(SourceFile)
            .where(SourceFile.status == "quarantined", SourceFile.attempts > 1)
        )
        phase.outcomes["  quarantined after more than one attempt (a fault hit them)"] += int(later or 0)
        stuck = session.scalar(select(func.count()).select_from(Job).where(Job.state.in_(("running", "queued"))))
        phase.errors["stuck: jobs left running/queued"] += int(stuck or 0)
        busy = session.scalar(
            select(func.count()).select_from(SourceFile).where(SourceFile.status.in_(("pending", "processing")))
        )
        phase.errors["stuck: files left pending/processing"] += int(busy or 0)
        rows = session.execute(select(SourceFile.sha256, SourceFile.finished_at)).all()
    phase.outcomes["duplicates (re-drops)"] += len(batch) - len(rows)
    phase.latencies["file"] = [
        f.timestamp() - sender.dropped[sha] for sha, f in rows if f is not None and sha in sender.dropped
    ]


def log_leaks(paths: list[Path], secrets: set[str]) -> int:
    text = "\n".join(p.read_text("utf-8", errors="replace") for p in paths if p.exists())
    return len(leaks(text, secrets))


# After the last job a move may still be due: a worker stopped between its commit and its move
# leaves the file in work/ for the periodic sweep, which moves what finished 60 s ago or more
# (workers.tasks.SETTLED_S) and runs every 10 s here. Past this grace, a file still there is stuck.
WORK_GRACE_S = 150.0


def wait_done(sessions: Any, sender: Sender, work: Path, total: int, timeout: float, tick: Callable[[], None]) -> bool:
    idle_since: list[float] = []

    def done() -> bool:
        tick()
        if sender.sent < total or sender.left():
            return False
        with sessions() as session:
            open_jobs = session.scalar(
                select(func.count()).select_from(Job).where(Job.state.in_(("running", "queued")))
            )
            busy = session.scalar(
                select(func.count()).select_from(SourceFile).where(SourceFile.status.in_(("pending", "processing")))
            )
            held = session.scalar(select(func.count()).select_from(SourceFile).where(SourceFile.status == "held"))
        if open_jobs or busy:
            idle_since.clear()
            return False
        idle_since[:] = idle_since or [time.monotonic()]
        waiting = sum(1 for p in work.glob("*") if p.is_file() and not p.name.endswith(".partial"))
        return waiting <= int(held or 0) or time.monotonic() - idle_since[0] > WORK_GRACE_S

    try:
        wait_until(done, timeout, "the batch", every=1.0)
        return True
    except AssertionError:
        return False
        with sessions() as session:
            open_jobs = session.scalar(
                select(func.count()).select_from(Job).where(Job.state.in_(("running", "queued")))
            )
            busy = session.scalar(
                select(func.count()).select_from(SourceFile).where(SourceFile.status.in_(("pending", "processing")))
            )
        return not open_jobs and not busy

    try:
        wait_until(done, timeout, "the batch", every=1.0)
        return True
    except AssertionError:
        return False


# --------------------------------------------------------------------------- faults at progress points


class Faults:
    """Runs each fault once, when the sender has dropped the given share of the batch."""

    def __init__(self, sender: Sender, total: int) -> None:
        self.sender, self.total = sender, total
        self.plan: list[tuple[float, str, Callable[[], Callable[[], bool]]]] = []
        self.done: list[tuple[str, Callable[[], bool]]] = []

    def at(self, share: float, name: str, inject: Callable[[], Callable[[], bool]]) -> None:
        """`inject` does the harm and returns a check of recovery, asked at the end."""
        self.plan.append((share, name, inject))

    def tick(self) -> None:
        while self.plan and self.sender.sent >= self.plan[0][0] * self.total:
            _, name, inject = self.plan.pop(0)
            print(f"  fault: {name}", flush=True)
            self.done.append((name, inject()))

    def report(self, phase: Phase) -> None:
        for name, recovered in self.done:
            phase.faults.append((name, bool(recovered())))
        for _, name, _ in self.plan:
            phase.faults.append((f"{name} (never reached)", False))


def lock_sqlite(db_path: Path, seconds: float, finished: Callable[[], int]) -> Callable[[], bool]:
    """Another process takes SQLite's write lock and keeps it longer than the busy timeout."""
    # It waits its turn for the lock like any writer (the service is writing all the time): with
    # sqlite3's 5 s default it would give up at once and no fault would have been injected.
    code = (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], timeout=300, isolation_level=None); "
        "c.execute('BEGIN EXCLUSIVE'); time.sleep(float(sys.argv[2])); c.execute('ROLLBACK')"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(db_path), str(seconds)])
    before = finished()
    holder.wait(timeout=seconds + 360)
    held = holder.returncode == 0  # the lock was taken and kept for the whole time
    return lambda: held and finished() > before


def count_finished(sessions: Any) -> Callable[[], int]:
    def count() -> int:
        with contextlib.suppress(Exception), sessions() as session:
            return int(
                session.scalar(select(func.count()).select_from(SourceFile).where(SourceFile.finished_at.is_not(None)))
                or 0
            )
        return -1

    return count


# --------------------------------------------------------------------------- embedded


def run_embedded(
    batch: list[BatchFile], users: int, secrets: set[str], base: Path, max_s: float, ramp_s: float
) -> Phase:
    from db.engine import make_engine, session_factory
    from db.migrate import upgrade

    phase = Phase(f"embedded (dxa serve, SQLite): {len(batch)} files")
    data_dir, inbox = base / "emb" / "data", base / "emb" / "inbox"
    inbox.mkdir(parents=True)
    data_dir.mkdir(parents=True)
    tmpfs = (
        os.geteuid() == 0
        and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(inbox)]).returncode == 0
    )
    if not tmpfs:
        phase.notes.append("inbox full-disk fault not injected: not root, no tmpfs (no substitute used)")
    url = f"sqlite:///{data_dir / 'dxa.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    names = make_users(sessions, users)
    port = free_port()
    env = service_env(
        DXA_DATA_DIR=str(data_dir), DXA_INBOX=str(inbox), DXA_PORT=str(port), DXA_HOST="127.0.0.1",
        DXA_MIN_FILE_AGE_S="0", DXA_SCAN_INTERVAL_S="0.2",
    )  # fmt: skip
    serve = dxa(["serve"], env, base / "serve.log").start()
    try:
        serve.wait_log("DXA monitor (embedded)", 90)
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 90, "dxa serve's web app")
        odd = odd_entries(inbox)
        sender = Sender(batch, inbox)
        rss0 = rss_mb(serve.pid)
        rss_restart = [0.0]
        finished = count_finished(sessions)
        faults = Faults(sender, len(batch))
        web_done = threading.Event()
        faults.at(0.2, "SQLite locked by another process for 40 s (busy timeout 30 s)",
                  lambda: lock_sqlite(data_dir / "dxa.db", 40, finished))  # fmt: skip
        if tmpfs:

            def full_disk() -> Callable[[], bool]:
                filler = fill_disk(inbox)
                enospc = sender.enospc
                time.sleep(8)
                filler.unlink()
                return lambda: sender.sent == len(batch) and sender.enospc > enospc  # it was hit, then waited out

            faults.at(0.4, "inbox disk full (tmpfs) for 8 s", full_disk)

        def kill_serve() -> Callable[[], bool]:
            web_done.wait(timeout=300)  # the users' session ends first: the web dies with it
            serve.kill()
            serve.start()
            serve.wait_log("DXA monitor (embedded)", 90)
            rss_restart[0] = rss_mb(serve.pid)
            before = finished()
            return lambda: finished() > before

        faults.at(0.6, "kill -9 of dxa serve, restart", kill_serve)
        sender.thread.start()
        web = users_thread(
            f"http://127.0.0.1:{port}", names, lambda: sender.sent >= 0.55 * len(batch), phase, max_s / 2, ramp_s
        )

        def users_done() -> None:
            web.join()
            web_done.set()

        threading.Thread(target=users_done, daemon=True).start()
        complete = wait_done(sessions, sender, data_dir / "work", len(batch), max_s, faults.tick)
        if not complete:
            phase.errors["hang: unfinished within the time bound"] += 1
        phase.rss_mb = (rss0, rss_mb(serve.pid))
        phase.notes.append(f"RSS is dxa serve's own; after the kill -9 it restarted at {rss_restart[0]:.0f} MB")
        logged = sum(int(n) for n in re.findall(r"inbox: (\d+) entr", serve.log()))
        left = [p for p in inbox.iterdir() if p.name.startswith("odd") and (p.is_symlink() or not p.is_dir())]
        # the count logged includes the sender's folders left empty once their files were claimed
        phase.outcomes[f"odd inbox entries made {odd}: entries refused in the log (with emptied folders)"] += logged
        phase.outcomes["odd inbox entries: QA entries"] += _audit_count(sessions, "inbox_entry_refused")
        phase.outcomes["odd inbox entries: non-folders still in the inbox"] += len(left)
        faults.report(phase)
    finally:
        serve.stop()
    settle(phase, sessions, data_dir, inbox, batch, sender)
    phase.errors["patient data in service log"] += log_leaks([base / "serve.log"], secrets)
    engine.dispose()
    if tmpfs:
        subprocess.run(["umount", "-l", str(inbox)], check=False)
    return phase


# --------------------------------------------------------------------------- celery


def terminate_backends(url: str) -> Callable[[], bool]:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conninfo = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (parsed.database,),
        ).fetchall()
    ended = len(rows)
    return lambda: ended > 0


def run_celery(batch: list[BatchFile], users: int, secrets: set[str], base: Path, max_s: float, ramp_s: float) -> Phase:
    from db.engine import make_engine, session_factory
    from db.migrate import upgrade
    from tests.conftest import create_postgres_database, drop_postgres_database

    phase = Phase(f"celery (2 worker processes, PostgreSQL, Redis): {len(batch)} files")
    data_dir, inbox = base / "cel" / "data", base / "cel" / "inbox"
    inbox.mkdir(parents=True)
    redis = PrivateRedis(base / "redis.log")
    redis.start()
    pg: PrivatePostgres | None = None
    if private_postgres.available():
        pg = PrivatePostgres()  # ours to restart: never the machine's shared server
        pg.start()
        url = pg.create_database("dxa_soak")
    else:
        url = create_postgres_database("dxa_soak")
        phase.notes.append("no private PostgreSQL (pg_ctl) here: the server restart fault was not injected")
    procs: list[Any] = []
    engine = None
    try:
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        names = make_users(sessions, users)
        port = free_port()
        env = service_env(
            DXA_BROKER_URL=redis.url, DXA_DATABASE_URL=url, DXA_DATA_DIR=str(data_dir), DXA_INBOX=str(inbox),
            DXA_MIN_FILE_AGE_S="0", DXA_SCAN_INTERVAL_S="0.2", DXA_PORT=str(port), DXA_HOST="127.0.0.1",
        )  # fmt: skip
        worker = celery_worker(env, base / "worker.log", concurrency=2).start()
        watch = dxa(["watch"], env, base / "watch.log").start()
        web = dxa(["web"], env, base / "web.log").start()
        procs = [watch, web, worker]
        worker.wait_log("ready.", 90)
        watch.wait_log("watching the inbox", 90)
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 90, "dxa web")
        sender = Sender(batch, inbox)
        rss0 = rss_mb(worker.pid, pool=True)
        finished = count_finished(sessions)
        faults = Faults(sender, len(batch))

        def kill_pool_process() -> Callable[[], bool]:
            pool = worker.children()
            victim = next((p for p in pool if psutil.Process(p).ppid() == worker.pid), None)
            if victim is not None:
                os.kill(victim, 9)
            before = finished()
            return lambda: victim is not None and finished() > before

        def restart_redis() -> Callable[[], bool]:
            redis.kill()
            time.sleep(3)
            redis.start()
            before = finished()
            return lambda: finished() > before

        def end_connections() -> Callable[[], bool]:
            ended = terminate_backends(url)
            before = finished()
            return lambda: ended() and finished() > before

        def kill_worker() -> Callable[[], bool]:
            worker.kill()
            worker.start()
            worker.wait_log("ready.", 120)
            before = finished()
            return lambda: finished() > before

        def restart_postgres() -> Callable[[], bool]:
            assert pg is not None
            pg.restart(down_s=3)
            before = finished()
            return lambda: finished() > before

        faults.at(0.2, "kill -9 of a Celery pool process", kill_pool_process)
        faults.at(0.35, "private Redis killed and restarted", restart_redis)
        faults.at(0.5, "kill -9 of the whole Celery worker (main process and pool), restarted", kill_worker)
        if pg is not None:
            faults.at(0.65, "private PostgreSQL restarted (fast shutdown, 3 s down)", restart_postgres)
        faults.at(0.8, "pg_terminate_backend on every connection of the database", end_connections)
        last_sweep = [0.0]

        def tick() -> None:
            faults.tick()
            if time.monotonic() - last_sweep[0] > 10:  # what beat does
                send_sweep(redis.url)
                last_sweep[0] = time.monotonic()

        sender.thread.start()
        users_thread(f"http://127.0.0.1:{port}", names, lambda: sender.sent >= len(batch), phase, max_s / 2, ramp_s)
        complete = wait_done(sessions, sender, data_dir / "work", len(batch), max_s, tick)
        if not complete:
            phase.errors["hang: unfinished within the time bound"] += 1
        phase.rss_mb = (rss0, rss_mb(worker.pid, pool=True))
        faults.report(phase)
        for proc in procs:
            proc.stop()
        settle(phase, sessions, data_dir, inbox, batch, sender)
        phase.errors["patient data in service log"] += log_leaks(
            [base / "worker.log", base / "watch.log", base / "web.log"], secrets
        )
    finally:
        for proc in procs:
            proc.stop()
        if engine is not None:
            engine.dispose()
        if pg is not None:
            pg.close()
        else:
            drop_postgres_database(url)
        redis.stop()
    return phase


def _audit_count(sessions: Any, action: str) -> int:
    from db.models import AuditEvent

    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)) or 0)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------- the table


# The "Done when", one column each: an error's key starts with its category.
CHECKS = {
    "untyped errors": "untyped:",
    "hangs": "hang:",
    "stuck files": "stuck:",
    "lost or doubled": "lost or doubled:",
    "patient ids in logs": "patient data",
    "user errors": "user errors:",
}


def _check(key: str) -> str:
    return next((name for name, prefix in CHECKS.items() if key.startswith(prefix)), "other errors")


def table(phases: list[Phase]) -> str:
    ends = ["archived", "quarantined", "held", "duplicates"]
    head = ["phase", "inputs and how each ended", "files in", "accounted", "archived", "quarantined"]
    head += ["held for a person", "duplicates", "faults injected → recovered", "p95"]
    head += [*CHECKS, "other errors", "RSS start → end"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    details: list[str] = []
    for p in phases:
        how = "; ".join(f"{k} {v}" for k, v in sorted(p.outcomes.items()))
        faults = "; ".join(f"{name} → {'yes' if ok else 'NO'}" for name, ok in p.faults) or "-"
        lat = ", ".join(f"{k} {p95(v)} (n={len(v)})" for k, v in p.latencies.items() if v) or "-"
        checks: Counter[str] = Counter({name: 0 for name in [*CHECKS, "other errors"]})
        for key, n in sorted(p.errors.items()):
            checks[_check(key)] += n
            if n:
                details.append(f"- {p.name}: {key}: {n}")
        rss = f"{p.rss_mb[0]:.0f} → {p.rss_mb[1]:.0f} MB" if p.rss_mb else "-"
        cells = [p.name, how, str(p.files_in), str(p.accounted)]
        cells += [str(p.ends[e]) if e in p.ends else "-" for e in ends]
        cells += [faults, lat, *(str(checks[name]) for name in [*CHECKS, "other errors"]), rss]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {p.name}: {n}" + (f" (×{k})" if k > 1 else "") for p in phases for n, k in Counter(p.notes).items()]
    return "\n".join(lines + details + notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--embedded-files", type=int, default=None, help="default: --files")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--modes", default="mutants,embedded,celery")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="per pipeline phase")
    ap.add_argument("--ramp-seconds", type=float, default=60.0, help="the users arrive within this time")
    ap.add_argument("--keep", type=Path, default=None, help="keep logs and data in a folder under this one")
    args = ap.parse_args(argv)
    modes = {m.strip() for m in args.modes.split(",")}
    secrets = patient_strings(SAMPLES)
    phases: list[Phase] = []
    started = time.monotonic()
    keep = args.keep.resolve() if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dxa-soak-", dir=keep) as tmp:
        base = Path(tmp)
        if keep is not None:  # the services' logs, data folders and databases stay for a look afterwards
            base = Path(tempfile.mkdtemp(prefix="run-", dir=keep))
            print(f"  logs and data in {base}", flush=True)
        if "mutants" in modes:
            phases.append(run_mutants(args.mutants, secrets, base / "mutants.log"))
            print(f"  ... {phases[-1].name}: done", flush=True)
        batch = build_batch(args.files) if modes & {"embedded", "celery"} else []
        if "embedded" in modes:
            small = batch if args.embedded_files is None else build_batch(args.embedded_files)
            phases.append(run_embedded(small, args.users, secrets, base, args.max_minutes * 60, args.ramp_seconds))
            print(f"  ... {phases[-1].name}: done", flush=True)
        if "celery" in modes:
            phases.append(run_celery(batch, args.users, secrets, base, args.max_minutes * 60, args.ramp_seconds))
            print(f"  ... {phases[-1].name}: done", flush=True)
    print()
    print(table(phases))
    print(f"\nsoak took {(time.monotonic() - started) / 60:.1f} min")
    bad = sum(sum(p.errors.values()) for p in phases) + sum(1 for p in phases for _, ok in p.faults if not ok)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
