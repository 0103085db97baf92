"""End-to-end pipeline throughput (issues 4 and 13): files dropped into the inbox -> stored and
their patient evaluated. Prints figures; not a test.

    .venv/bin/python bench/pipeline.py                        # a few minutes: 300-file burst, 100 steady
    .venv/bin/python bench/pipeline.py --files 1000 --steady 300 --rounds 2
    .venv/bin/python bench/pipeline.py --modes backload --backload 100000   # issue 13's back-load
    .venv/bin/python bench/pipeline.py --modes embedded --profile /tmp/prof  # py-spy: where CPU goes

Modes, alternated in each round (`--rounds`), so the ratios compare runs under the same load:
- parse: `parse_file` on every file's bytes, in this process, one after the other;
- embedded: the `dxa serve` loops (watcher + runner threads, SQLite, no broker) in a process of
  their own, which the bench drops files into, polls and samples from outside;
- celery1 / celery2: `dxa watch` + a real Celery worker with 1 or 2 prefork processes on a
  private redis-server and a throwaway PostgreSQL database (as the tests make them);
- backload: N distinct files through `dxa ingest FOLDER` (a subprocess) and through the embedded
  watcher; files/s, wall time, RSS at start and end.

Each service mode takes a burst (`--files`, dropped at once: throughput, and drop -> evaluated
latency that is mostly queueing) and then a steady stream (`--steady` other files at `--rate`
files/s: latency when the service keeps up). Files are the shared samples plus re-drops, UID
conflicts and distinct variants (`tests.integration.pipeline.support.make_batch`).

Latency: drop -> the file's patient's first evaluation finished after the file's rows were
committed. SQL statements per file: SQLAlchemy engine events (in the embedded service's process;
`bench/sql_counter.py` wraps the Celery worker and `dxa watch`, each pool process counted).
Commits per file, Celery: PostgreSQL's own count for the bench database (`pg_stat_database`,
read once the backends published it), which also counts each connection pre-ping; the engine
events' count is printed beside it. During a Celery burst, `pg_stat_activity` is sampled (lock
waits between workers, transactions held open while Python runs) and the worker's log gives the
task timeline (how busy each pool process was, what the tasks carried). CPU ms per file: user +
system of the processes (children included; PostgreSQL backends of the bench database for Celery).
Peak RSS: the largest sum of RSS over the mode's process tree, sampled every 0.5 s (from the bench's
process: the sampler takes none of the services' CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import event, select  # noqa: E402

from bench.sql_counter import totals as sql_totals  # noqa: E402
from bench.store import postgres_cpu  # noqa: E402
from db.models import Job, SourceFile  # noqa: E402
from tests.integration.pipeline.support import (  # noqa: E402
    VENV_BIN,
    BatchFile,
    PrivateRedis,
    Proc,
    Sample,
    _is_dicom,
    _new_patient,
    celery_worker,
    drop,
    files_below,
    load_samples,
    make_batch,
    pipeline_idle,
    rewrite_dicom,
    service_env,
    wait_until,
)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


@dataclass
class Result:
    mode: str
    files: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)  # latencies of the steady stream
    started: float = 0.0  # epoch seconds: the burst's drop
    statements: int | None = None
    commits: int | None = None
    cpu: dict[str, float] | None = None  # seconds by component, burst phase
    evaluations: int = 0
    patients: int = 0  # distinct patients evaluated
    peak_rss: int = 0  # bytes
    peak_pss: int = 0  # bytes: pages shared by forked processes counted once, split between them
    server_commits: int | None = None  # PostgreSQL's own count (pg_stat_database), every process included
    activity: dict[str, float] | None = None  # shares of pg_stat_activity samples (Celery modes)
    tasks: str = ""  # the worker log's task timeline, summarised (Celery modes)
    machine_cpu: float | None = None  # busy CPU seconds of the whole machine (every core) over the CPU window
    cpu_window: float = 0.0  # seconds between the two CPU readings of the burst (`cpu`, `machine_cpu`)

    @property
    def cores(self) -> float | None:
        """Cores the mode's processes kept busy during the burst: files/s x CPU seconds per file."""
        return sum(self.cpu.values()) / self.seconds if self.cpu and self.seconds else None

    def per_file(self, count: int | None) -> str:
        return f"{count / self.files:.1f}" if count is not None and self.files else "-"

    @property
    def rate(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0


def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]:.2f}"


def _tree(pids: list[int]) -> list[Any]:
    import psutil

    procs: dict[int, Any] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            procs[pid] = root
            for child in root.children(recursive=True):
                procs[child.pid] = child
    return list(procs.values())


def _tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their descendants (reaped ones included)."""
    import psutil

    total = 0.0
    for proc in _tree(pids):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _tree_rss(pids: list[int]) -> int:
    import psutil

    total = 0
    for proc in _tree(pids):
        with contextlib.suppress(psutil.Error):
            total += int(proc.memory_info().rss)
    return total


def _tree_pss(pids: list[int]) -> int:
    """Summed PSS of the process trees. RSS counts a page shared by a forked pool process and its
    parse child once per process (the parsers and the imports, copy-on-write), so a tree's summed
    RSS says more about how many processes it has than about the memory it takes."""
    import psutil

    total = 0
    for proc in _tree(pids):
        with contextlib.suppress(psutil.Error, AttributeError):
            total += int(getattr(proc.memory_full_info(), "pss", 0))
    return total


@contextlib.contextmanager
def rss_peak(pids: Callable[[], list[int]]) -> Iterator[list[int]]:
    """[peak RSS, peak PSS] of the summed memory of the process trees, sampled until the block ends."""
    peak = [0, 0]

    def sample(stop: threading.Event) -> None:
        while not stop.wait(0.5):
            peak[0] = max(peak[0], _tree_rss(pids()))
            peak[1] = max(peak[1], _tree_pss(pids()))

    with _in_background(sample):
        yield peak


@contextlib.contextmanager
def _in_background(sample: Callable[[threading.Event], None]) -> Iterator[None]:
    """`sample` run in a thread of its own until the block ends (it returns once the event is set)."""
    stop = threading.Event()
    thread = threading.Thread(target=sample, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _epoch(moment: datetime | None) -> float:
    if moment is None:
        return float("nan")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


STATS_FLUSH_S = 10.5  # an idle PostgreSQL backend publishes its counters up to 10 s late (PGSTAT_IDLE_INTERVAL)


def _server_commits(database: str) -> int:
    """Transactions committed in `database`, as PostgreSQL counts them: every backend of every
    process. Besides the services' own transactions (what `bench/sql_counter.py` counts, pool
    processes included), each pre-ping of a pooled connection at checkout (`pool_pre_ping`: an
    autocommit SELECT 1, a round trip per transaction) counts as one; the engine events never see
    those. The bench's own reads end in a rollback and are not counted."""
    import psycopg

    from tests.conftest import _admin_conninfo

    with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def pg_activity(database: str) -> Iterator[dict[str, float]]:
    """What the services' backends of `database` are doing, sampled every 20 ms until the block
    ends: shares of samples per state (active, idle in transaction, waiting for a lock and on
    which kind, client reads) and the mean number of backends active at once. Serialisation on
    row locks between workers shows as `Lock` waits; a worker waiting for its own client (Python
    between two statements of a transaction) as `idle in transaction`."""
    import psycopg

    from tests.conftest import _admin_conninfo

    counts: dict[str, float] = {}

    def sample(stop: threading.Event) -> None:
        with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
            me = conn.info.backend_pid
            n = 0
            busy = 0
            while not stop.wait(0.02):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event, left(query, 8000) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> %s AND backend_type = 'client backend'",
                    (database, me),
                ).fetchall()
                n += 1
                for state, wtype, wevent, query in rows:
                    if state == "active":
                        busy += 1
                        key = f"active: waits {wtype}:{wevent}" if wtype and wtype != "Client" else "active"
                        if wtype == "Lock":  # which statement waits (SQL text with placeholders, no values)
                            key += f" in {_statement_head(query or '')}"
                    elif state == "idle in transaction":
                        key = "idle in transaction"
                    else:
                        continue
                    counts[key] = counts.get(key, 0) + 1
            counts["_samples"] = n
            counts["_busy"] = busy

    with _in_background(sample):
        yield counts


def _statement_head(query: str) -> str:
    """The kind and first table of a statement: 'INSERT patients', 'SELECT jobs FOR UPDATE'."""
    import re

    words = query.split()
    verb = words[0].upper() if words else "?"
    table = re.search(r"\b(?:INTO|FROM|UPDATE)\s+(\w+)", query, re.IGNORECASE)
    locking = " FOR UPDATE" if verb == "SELECT" and re.search(r"\bFOR UPDATE\b", query, re.IGNORECASE) else ""
    return f"{verb} {table.group(1) if table else '?'}{locking}"


def task_timeline(log_text: str, since: float = 0.0, until: float = float("inf")) -> str:
    """From a Celery worker log (INFO): per kind of task, how many ran, their files or jobs, and the
    seconds the pool processes spent in them; how busy each pool process was between the first
    task's start and the last one's end (a process idle while work waits points at dispatch)."""
    import re

    rx = re.compile(r"\[(\S+ \S+): INFO/(\S+)\] Task dxa\.(\w+)\[\S+\] succeeded in ([\d.]+)s: (.*)")
    rows = []
    for line in log_text.splitlines():
        m = rx.search(line)
        if m:
            end = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the worker logs local time
            if since <= end - float(m[4]) <= until:
                rows.append((end - float(m[4]), end, m[3], m[2], max(1, m[5].count("'") // 2)))
    if not rows:
        return ""
    t0, t1 = min(r[0] for r in rows), max(r[1] for r in rows)
    late = f"first task started {t0 - since:.2f} s after the drop; " if since else ""
    kinds: dict[str, list[float]] = {}
    for start, end, name, _, jobs in rows:
        k = kinds.setdefault(name, [0, 0, 0.0])
        k[0] += 1
        k[1] += jobs
        k[2] += end - start
    procs: dict[str, float] = {}
    for start, end, _, proc, _ in rows:
        procs[proc] = procs.get(proc, 0.0) + end - start
    parts = "; ".join(f"{name} {int(n)} tasks, {int(j)} jobs, {t:.1f} s" for name, (n, j, t) in kinds.items())
    busy = ", ".join(f"{p} {100 * t / (t1 - t0):.0f}%" for p, t in sorted(procs.items()))
    return f"{late}tasks over {t1 - t0:.1f} s: {parts}; busy {busy}"


def parse_only(batch: list[BatchFile]) -> Result:
    from ingest.errors import ParseError
    from ingest.parse import ParseLimits, parse_file
    from settings import Settings

    s = Settings()
    limits = ParseLimits(max_bytes=s.max_file_bytes, max_pdf_pages=s.max_pdf_pages)
    start = time.perf_counter()
    cpu0 = time.process_time()
    for f in batch:
        with contextlib.suppress(ParseError):
            parse_file(f.data, Path(f.rel).name, limits)
    result = Result("parse-only (1 process)", len(batch), time.perf_counter() - start)
    result.cpu = {"process": time.process_time() - cpu0}
    return result


def _measure(sessions: Any, dropped_at: dict[str, float], t0: float) -> tuple[float, list[float], int]:
    """(seconds from t0 to the last completion, drop -> evaluated latencies, evaluations) of the
    files in `dropped_at`, from the database: files' own finish, their patients' evaluations."""
    with sessions() as session:
        files = session.execute(
            select(SourceFile.sha256, SourceFile.status, SourceFile.patient_id, SourceFile.finished_at)
        ).all()
        evaluations: dict[int, list[float]] = {}
        for patient_id, finished in session.execute(
            select(Job.patient_id, Job.finished_at).where(Job.kind == "evaluate_patient", Job.state == "done")
        ):
            evaluations.setdefault(int(patient_id), []).append(_epoch(finished))
    latencies: list[float] = []
    done_at = t0
    for sha, status, patient_id, finished in files:
        if sha not in dropped_at:
            continue
        end = _epoch(finished)
        if status == "ingested" and patient_id is not None:
            later = [t for t in evaluations.get(int(patient_id), []) if t >= end - 1e-3]
            end = min(later) if later else end
            latencies.append(end - dropped_at[sha])
        done_at = max(done_at, end)
    return done_at - t0, latencies, sum(len(v) for v in evaluations.values())


def _evaluated_patients(sessions: Any) -> int:
    from sqlalchemy import distinct, func

    with sessions() as session:
        count = session.scalar(
            select(func.count(distinct(Job.patient_id))).where(Job.kind == "evaluate_patient", Job.state == "done")
        )
    return int(count or 0)


def drop_steadily(files: list[BatchFile], inbox: Path, rate: float, stamp: dict[str, float]) -> None:
    start = time.monotonic()
    for i, f in enumerate(files):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        drop([f], inbox, stamp)


@dataclass
class Service:
    """A running pipeline: where to drop, how to read its database, what to count."""

    inbox: Path
    sessions: Any
    pids: Callable[[], list[int]]
    cpu: Callable[[], dict[str, float]]
    counts: Callable[[], dict[str, int]]
    database: str | None = None  # PostgreSQL: sampled (pg_stat_activity) during the burst


PROFILE: list[Path] = []  # --profile: where py-spy writes the burst's collapsed stacks
LOGS: list[Path] = []  # --logs: where the Celery worker's and watcher's logs are copied


@contextlib.contextmanager
def profiled(pids: list[int], mode: str) -> Iterator[None]:
    """py-spy over the burst (every thread and child process of `pids`), then the frames that
    hold the most samples printed as shares: where the wall time goes, idle waits included."""
    if not PROFILE:
        yield
        return
    PROFILE[0].mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in mode)[:40]
    procs = []
    for pid in pids:
        out = PROFILE[0] / f"{slug}-{pid}.txt"
        argv = [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--subprocesses", "--idle", "--threads"]
        argv += ["--rate", "100", "--format", "raw", "--output", str(out), "--nonblocking"]
        procs.append((subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out))
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for proc, _ in procs:
            proc.send_signal(2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        for _, out in procs:
            summarise_profile(out, mode)


MARKERS = {
    "parse (child)": ("_parse_path",),
    "waiting for a parse child": ("parse_in_child",),
    "SQLite BEGIN IMMEDIATE / lock": ("_on_begin",),
    "store a batch": ("_store_one",),
    "moves + fsync": ("_finish_moves", "Moves.sync", "sync (services/files.py)"),
    "evaluate": ("_evaluate_in",),
    "claim jobs": ("claim_next_jobs", "claim_job"),
    "intake (claim + register)": ("intake_many",),
    "heartbeat": ("touch_running",),
    "idle waits (runner/watcher sleep)": ("wait (threading.py)",),
}


def summarise_profile(path: Path, mode: str) -> None:
    """Shares of the samples whose stack passes through each marker (a sample can count twice)."""
    if not path.is_file():
        print(f"  profile of {mode}: none written ({path.name})")
        return
    totals = dict.fromkeys(MARKERS, 0)
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples += int(count)
        for name, needles in MARKERS.items():
            if any(n in stack for n in needles):
                totals[name] += int(count)
    if samples:
        parts = ", ".join(f"{name} {100 * n / samples:.0f}%" for name, n in totals.items() if n)
        print(f"  profile of {mode} ({path.name}, {samples} CPU samples, all threads and children): {parts}")


def run_phases(
    svc: Service,
    burst: list[BatchFile],
    steady: list[BatchFile],
    rate: float,
    mode: str,
    poll_inbox: bool = True,
) -> Result:
    """The burst, then the steady stream. `poll_inbox=False` (the back-load through the watcher):
    the end is read from the database only, every dropped file registered (so out of the inbox) and
    no job left; listing an inbox of thousands of folders every 0.5 s costs the cores the service
    runs on."""
    seen = 0
    dropped: dict[str, float] = {}
    counts0 = svc.counts()
    cpu0, machine0, clock0 = svc.cpu(), _machine_busy(), time.monotonic()
    activity_of: contextlib.AbstractContextManager[dict[str, float]] = (
        pg_activity(svc.database) if svc.database else contextlib.nullcontext({})
    )
    with rss_peak(svc.pids) as peak:
        with profiled(svc.pids(), mode), activity_of as activity:
            t0 = time.time()
            drop(burst, svc.inbox, dropped)
            seen += len(burst)
            wait_until(
                # The end is read from the rows' timestamps (`_measure`): polling more often only
                # takes the embedded mode's interpreter from it.
                lambda: (not poll_inbox or not files_below(svc.inbox)) and pipeline_idle(svc.sessions, seen),
                3600,
                "burst",
                every=0.5,
            )
        cpu1, machine1, clock1 = svc.cpu(), _machine_busy(), time.monotonic()
        counts1 = svc.counts()
        seconds, latencies, evaluations = _measure(svc.sessions, dropped, t0)
        result = Result(mode, len(burst), seconds, latencies, started=t0)
        result.cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        result.machine_cpu, result.cpu_window = machine1 - machine0, clock1 - clock0
        result.statements = counts1["statements"] - counts0["statements"]
        result.commits = counts1["commits"] - counts0["commits"]
        if "server_commits" in counts0:
            result.server_commits = counts1["server_commits"] - counts0["server_commits"]
        samples = activity.pop("_samples", 0)
        if samples:
            result.activity = {k: v / samples for k, v in activity.items()}
        result.evaluations = evaluations
        result.patients = _evaluated_patients(svc.sessions)
        if steady:
            stream: dict[str, float] = {}
            t1 = time.time()
            drop_steadily(steady, svc.inbox, rate, stream)
            seen += len(steady)
            wait_until(lambda: not files_below(svc.inbox) and pipeline_idle(svc.sessions, seen), 3600, "steady")
            _, result.steady, _ = _measure(svc.sessions, stream, t1)
    result.peak_rss, result.peak_pss = peak[0], peak[1]
    return result


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far, every core (/proc/stat: all but idle and iowait):
    what the mode's processes took plus everyone else's, to tell the cores a mode could have had."""
    import psutil

    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0))


def _embedded_settings(tmp: str) -> Any:
    from settings import Settings

    return Settings(
        data_dir=Path(tmp) / "data", inbox=Path(tmp) / "inbox", database_url=None, broker_url=None,
        min_file_age_s=0, scan_interval_s=0.2,
    )  # fmt: skip


PROJECT_PACKAGES = ("db", "dxa", "ingest", "monitor", "services", "settings", "web", "workers")


def _use_tree(root: Path) -> None:
    """Make this (fresh, spawned) process import the project's packages from `root`'s source tree:
    `--compare` runs another checkout's embedded service beside this one's."""
    for name in [m for m in sys.modules if m.split(".")[0] in PROJECT_PACKAGES]:
        del sys.modules[name]
    sys.path.insert(0, str(root))


def _serve_embedded(tmp: str, runners: int, conn: Any, root: Path = ROOT) -> None:
    """The embedded service's process (`dxa serve`'s watcher and runner threads): what the bench
    does besides (dropping files, polling the database, sampling memory) runs in another process,
    as a sender and a monitor would, and takes neither this process's interpreter lock nor its
    CPU. Answers `counts` (SQL statements and commits, from the engine's events) until `stop`."""
    if root != ROOT:
        _use_tree(root)
    from db.migrate import upgrade
    from dxa.embedded import runner_threads, watch_forever
    from services.context import build_context

    settings = _embedded_settings(tmp)
    ctx = build_context(settings)
    upgrade(ctx.engine)
    counts = {"statements": 0, "commits": 0}

    def count(key: str) -> Any:
        def listener(*_: Any, **__: Any) -> None:
            counts[key] += 1

        return listener

    event.listen(ctx.engine, "before_cursor_execute", count("statements"))
    event.listen(ctx.engine, "commit", count("commits"))
    stop = threading.Event()
    threads = [threading.Thread(target=watch_forever, args=(ctx, stop), daemon=True)]
    threads += runner_threads(ctx, stop, runners)  # as `dxa serve` starts them
    for t in threads:
        t.start()
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    wait_until(lambda: counts["commits"] > 0, 30, "the runners' start-up refresh")
    conn.send(len(threads) - 1)
    try:
        while (request := conn.recv()) != "stop":
            conn.send(dict(counts) if request == "counts" else None)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        ctx.engine.dispose()
        conn.send("stopped")


def embedded(
    burst: list[BatchFile],
    steady: list[BatchFile],
    rate: float,
    runners: int = 2,
    rss: list[int] | None = None,
    poll_inbox: bool = True,
    root: Path = ROOT,
) -> Result:
    """The embedded service in a process of its own (`_serve_embedded`); CPU and memory are that
    process tree's, read from here (`rss`: its RSS every 0.5 s, for the back-load). `poll_inbox`:
    see `run_phases`. `root`: the source tree whose code the service runs (`--compare`)."""
    import multiprocessing

    from db.engine import make_engine, session_factory

    with tempfile.TemporaryDirectory(prefix="dxa-bench-") as tmp:
        settings = _embedded_settings(tmp)
        mine, theirs = multiprocessing.Pipe()
        proc = multiprocessing.get_context("spawn").Process(target=_serve_embedded, args=(tmp, runners, theirs, root))
        proc.start()
        engine = None
        try:
            if not mine.poll(120):
                raise RuntimeError("the embedded service did not start")
            threads = int(mine.recv())
            pid = int(proc.pid or 0)
            engine = make_engine(settings.db_url)

            def counts() -> dict[str, int]:
                mine.send("counts")
                answer: dict[str, int] = mine.recv()
                return answer

            svc = Service(
                settings.inbox_dir,
                session_factory(engine),
                lambda: [pid],
                lambda: {"process": _tree_cpu([pid])},
                counts,
            )

            def sample(stop: threading.Event) -> None:
                while rss is not None and not stop.wait(0.5):
                    rss.append(_tree_rss([pid]))

            with _in_background(sample):
                mode = f"embedded (SQLite, {threads} runner)"
                if root != ROOT:
                    mode = f"embedded (code of {root.name})"
                result = run_phases(svc, burst, steady, rate, mode, poll_inbox=poll_inbox)
        finally:
            if proc.is_alive():
                mine.send("stop")
                if mine.poll(60):
                    mine.recv()
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
            if engine is not None:
                engine.dispose()
    return result


def _counted(folder: Path, argv: list[str], root: Path = ROOT) -> list[str]:
    """A service command run under `root`'s bench/sql_counter.py (which puts `root` first on the path)."""
    return [sys.executable, str(root / "bench" / "sql_counter.py"), str(folder), Path(argv[0]).name, *argv[1:]]


def scaled(burst: list[BatchFile], steady: list[BatchFile], rate: float, processes: int, root: Path = ROOT) -> Result:
    """`dxa watch` + a Celery worker of `processes` prefork processes, running the code of `root`
    (this checkout, or `--compare`'s source tree, alternated under the same load)."""
    from sqlalchemy.engine import make_url

    from db.engine import make_engine, session_factory
    from db.migrate import upgrade
    from tests.conftest import create_postgres_database, drop_postgres_database

    with tempfile.TemporaryDirectory(prefix="dxa-bench-") as tmp:
        base = Path(tmp)
        redis = PrivateRedis(base / "redis.log")
        redis.start()
        url = create_postgres_database("dxa_bench")
        counters = base / "sql-counts"
        try:
            if root == ROOT:
                upgrade(url)
            else:  # that tree's own migrations: this one's head may be a revision it does not know
                subprocess.run(
                    [sys.executable, "-c", "import sys; from db.migrate import upgrade; upgrade(sys.argv[1])", url],
                    cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=True,
                )  # fmt: skip
            env = service_env(
                DXA_BROKER_URL=redis.url, DXA_DATABASE_URL=url, DXA_DATA_DIR=str(base / "data"),
                DXA_INBOX=str(base / "inbox"), DXA_MIN_FILE_AGE_S="0", DXA_SCAN_INTERVAL_S="0.2",
                PYTHONPATH=str(root),
            )  # fmt: skip
            worker = celery_worker(env, base / "worker.log", concurrency=processes)
            worker.argv = _counted(counters, worker.argv, root)
            # Run in `root`: Celery puts its working directory first on the path to import `-A`'s
            # module, so a worker started elsewhere ran that tree's `workers` with `root`'s others.
            worker.cwd = root
            worker.start()
            watch_argv = _counted(counters, [str(VENV_BIN / "dxa"), "watch"], root)
            watch = Proc(watch_argv, env, base / "watch.log", cwd=root).start()
            (base / "inbox").mkdir(parents=True, exist_ok=True)
            # No pre-ping (an autocommit SELECT 1 on each checkout): the bench's own polling then
            # ends each read in a rollback, and PostgreSQL's commit count is the services' alone.
            engine = make_engine(url, ping_idle_after_s=3600.0)
            sessions = session_factory(engine)
            database = str(make_url(url).database)
            try:
                worker.wait_log("ready.", 60)
                watch.wait_log("watching the inbox", 60)
                time.sleep(1.0)  # let the counters write their first figures

                def cpu() -> dict[str, float]:
                    return {
                        "worker": _tree_cpu([worker.pid]),
                        "watcher": _tree_cpu([watch.pid]),
                        "postgres": postgres_cpu(database),
                    }

                def counts() -> dict[str, int]:
                    time.sleep(STATS_FLUSH_S)  # the services' backends publish their counts (idle: 10 s)
                    return {**sql_totals(counters), "server_commits": _server_commits(database)}

                svc = Service(base / "inbox", sessions, lambda: [worker.pid, watch.pid], cpu, counts, database)
                name = f"celery, {processes} worker process{'es' if processes > 1 else ''} (PostgreSQL)"
                if root != ROOT:
                    name = f"{name[:-12]}(code of {root.name})"
                result = run_phases(svc, burst, steady, rate, name)
                # The burst's tasks only (the steady stream's single files come after it).
                result.tasks = task_timeline(
                    worker.log()[worker.offset :], result.started, result.started + result.seconds
                )
            finally:
                watch.stop()
                worker.stop()
                engine.dispose()
                if LOGS:  # --logs: the services' logs outlive the run
                    LOGS[0].mkdir(parents=True, exist_ok=True)
                    tree = "" if root == ROOT else f"{root.name}-"
                    for log in base.glob("*.log"):
                        shutil.copy(log, LOGS[0] / f"celery{processes}-{tree}{log.name}")
        finally:
            drop_postgres_database(url)
            redis.stop()
    return result


# --------------------------------------------------------------------------- back-load


def _write_files(files: list[BatchFile], folder: Path) -> None:
    for f in files:
        dest = folder / f.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.data)


def _variant(job: tuple[str, bytes, int, str]) -> int:
    """Write one distinct variant of a sample (as `make_batch` makes them); its size."""
    folder, data, round_, rel = job
    if _is_dicom(data):
        data = rewrite_dicom(data, _new_patient(round_))
    else:
        data = data + f"\n%dxa-test-variant {round_}\n".encode()
    dest = Path(folder) / f"variant{round_:03d}" / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return len(data)


def write_backload(samples: list[Sample], total: int, folder: Path) -> int:
    """`total` files of `make_batch`'s kinds written straight to `folder` (the variants by a pool of
    processes, none kept in memory): 100 000 distinct files without 1.3 GB in this process.
    Returns the bytes written."""
    import multiprocessing

    head = make_batch(samples, min(total, len(samples) + 13))
    _write_files(head, folder)
    written = sum(len(f.data) for f in head)
    accepted = [s for s in samples if s.expect == "accept"]
    jobs = (
        (str(folder), accepted[k % len(accepted)].data, k // len(accepted) + 1, accepted[k % len(accepted)].rel)
        for k in range(max(0, total - len(head)))
    )
    with multiprocessing.get_context("fork").Pool(max(1, min(2, os.cpu_count() or 1))) as pool:
        written += sum(pool.imap(_variant, jobs, chunksize=64))
    return written


@dataclass
class Backload:
    mode: str
    seconds: float
    rss: list[int]  # samples, 0.5 s apart
    summary: str = ""
    cpu: float | None = None  # user + system seconds of the run's processes (children included)

    def at(self, fraction: float) -> int:
        if not self.rss:
            return 0
        skip = min(4, len(self.rss) - 1)  # after start-up imports
        return self.rss[skip + round(fraction * (len(self.rss) - 1 - skip))]


def backload_ingest(folder: Path, files: int, root: Path = ROOT) -> Backload:
    """`dxa ingest FOLDER` in a subprocess on SQLite: wall time and the RSS of its process tree
    (the process and its parse children), sampled every 0.5 s. `root`: the source tree whose code
    runs (`--compare`: another checkout's, alternated with this one's under the same load)."""
    with tempfile.TemporaryDirectory(prefix="dxa-bench-") as tmp:
        env = service_env(
            DXA_DATA_DIR=str(Path(tmp) / "data"), DXA_INBOX=str(Path(tmp) / "inbox"), PYTHONPATH=str(root)
        )  # this checkout's code, even when another one is installed in the venv
        out = Path(tmp) / "ingest.out"
        import resource

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [str(VENV_BIN / "dxa"), "ingest", str(folder)], env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=root
            )
            samples: list[int] = []
            while proc.poll() is None:
                samples.append(_tree_rss([proc.pid]))
                time.sleep(0.5)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # dxa ingest and the parse children it reaped
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        lines = out.read_text(errors="replace").splitlines()
        summary = next((line for line in reversed(lines) if " files: " in line), "")
        if proc.returncode != 0:
            summary += f" (dxa ingest exited {proc.returncode})"
    name = "back-load: dxa ingest FOLDER (SQLite)" if root == ROOT else f"dxa ingest, code of {root.name}"
    return Backload(name, seconds, samples, summary, cpu)


class _OnDisk:
    """A back-load file for `drop`, read from the archive folder when it is dropped: 100 000 files
    are not held in the bench's memory (which is the service's: its RSS is what the bench samples)."""

    def __init__(self, rel: str, path: Path) -> None:
        self.rel, self.path = rel, path
        self._sha: str | None = None

    @property
    def data(self) -> bytes:
        data = self.path.read_bytes()
        self._sha = hashlib.sha256(data).hexdigest()
        return data

    @property
    def sha256(self) -> str:
        if self._sha is None:
            self._sha = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return self._sha


def backload_watcher(folder: Path, files: int, root: Path = ROOT) -> Backload:
    """The embedded watcher + runners take the N files dropped at once (copied from `folder` as they
    are dropped, each written as `<name>.part` then renamed, as a careful sender does: none held in
    memory); the RSS is the service process tree's (`embedded`). `root`: the source tree whose code
    the service runs (`--compare`)."""
    batch: list[Any] = [_OnDisk(p.relative_to(folder).as_posix(), p) for p in sorted(files_below(folder))]
    samples: list[int] = []
    r = embedded(batch, [], 1.0, rss=samples, poll_inbox=False, root=root)
    cpu = sum(r.cpu.values()) if r.cpu else None
    summary = f"{r.evaluations} patient evaluations for {r.patients} patients"
    name = "back-load: watcher (embedded, SQLite)" if root == ROOT else f"watcher, code of {root.name}"
    return Backload(name, r.seconds, samples, summary, cpu)


# --------------------------------------------------------------------------- report


def print_round(results: list[Result], parse: Result) -> None:
    head = f"{'mode':<42} {'files/s':>8} {'e2e/parse':>10} {'burst p50':>10} {'burst p95':>10}"
    print(f"{head} {'steady p95':>11} {'CPU ms/f':>9} {'SQL/f':>6} {'commits/f':>10} {'peak RSS':>9}")
    for r in [parse, *results]:
        ratio = f"{parse.rate / r.rate:.2f}x" if r is not parse and r.rate else "-"
        cpu = f"{sum(r.cpu.values()) / r.files * 1000:.1f}" if r.cpu else "-"
        rss = f"{r.peak_rss / 2**20:.0f} MB" if r.peak_rss else "-"
        print(
            f"{r.mode:<42} {r.rate:>8.1f} {ratio:>10} {pct(r.latencies, 0.5):>10} {pct(r.latencies, 0.95):>10}"
            f" {pct(r.steady, 0.95):>11} {cpu:>9} {r.per_file(r.statements):>6}"
            f" {r.per_file(r.server_commits if r.server_commits is not None else r.commits):>10} {rss:>9}"
        )
    for r in results:
        if r.cpu and len(r.cpu) > 1:
            parts = ", ".join(f"{k} {v / r.files * 1000:.1f}" for k, v in r.cpu.items())
            pss = f"; peak PSS {r.peak_pss / 2**20:.0f} MB" if r.peak_pss else ""
            print(f"  {r.mode}: CPU ms/file {parts}; {r.evaluations} patient evaluations{pss}")
        if r.server_commits is not None:
            print(
                f"    commits/file counted by PostgreSQL {r.per_file(r.server_commits)}"
                f" (engine events {r.per_file(r.commits)}; the rest are connection pre-pings)"
            )
        if r.activity:
            busy = r.activity.pop("_busy", 0.0)
            shares = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.activity.items(), key=lambda kv: -kv[1]))
            print(f"    PostgreSQL backends per sample (burst): {shares}; active {busy:.2f}")
        if r.tasks:
            print(f"    {r.tasks}")
    emb = next((r for r in results if r.mode.startswith("embedded") and "(code of " not in r.mode), None)
    one = next((r for r in results if "1 worker process " in r.mode and "(code of " not in r.mode), None)
    two = next((r for r in results if "2 worker processes" in r.mode and "(code of " not in r.mode), None)
    for label, r, target in (("embedded", emb, 1.5), ("celery 1 worker", one, 2.0)):
        if r is not None and r.rate:
            ratio = parse.rate / r.rate
            verdict = "meets" if ratio <= target else "misses"
            print(f"  {label}: end-to-end is {ratio:.2f}x parse-only ({verdict} ≤{target}x)")
    if one is not None and two is not None and one.rate:
        ratio = two.rate / one.rate
        print(f"  celery 2 workers / 1 worker: {ratio:.2f}x ({'meets' if ratio >= 1.7 else 'misses'} ≥1.7x)")
    other = [r for r in results if "(code of " in r.mode]  # --compare
    one_c = next((r for r in other if "1 worker process " in r.mode), None)
    two_c = next((r for r in other if "2 worker processes" in r.mode), None)
    emb_c = next((r for r in other if r.mode.startswith("embedded")), None)
    if emb_c is not None and emb_c.rate:
        print(f"  {emb_c.mode}: end-to-end is {parse.rate / emb_c.rate:.2f}x parse-only")
    if one_c is not None and one_c.rate:
        print(f"  {one_c.mode}: end-to-end is {parse.rate / one_c.rate:.2f}x parse-only")
        if two_c is not None:
            print(
                f"  celery 2 workers / 1 worker, {one_c.mode.rpartition('(')[2][:-1]}: {two_c.rate / one_c.rate:.2f}x"
            )
    for pair in ((one, two), (one_c, two_c)):
        print_cpu_bound(*pair)


def print_cpu_bound(one: Result | None, two: Result | None) -> None:
    """Whether two worker processes are held back by the CPU or by waiting. Cores used: files/s x
    CPU seconds per file (workers with their parse children, the watcher, the PostgreSQL backends;
    not Redis nor PostgreSQL's background writers). The CPU-bound ceiling of the 2-worker run:
    the machine's cores / its CPU per file, the rate it would reach with every core its own and no
    wait; and the 2/1 ratio that ceiling allows. The machine's busy cores over the burst (every
    process, from /proc/stat) tell what the rest of the machine took meanwhile."""
    cores = os.cpu_count() or 1
    for r in (one, two):
        if r is None or not r.cpu or not r.rate or r.cores is None:
            continue
        per_file = sum(r.cpu.values()) / r.files
        line = f"  {r.mode}: used {r.cores:.2f} cores ({r.rate:.1f} files/s x {per_file * 1000:.2f} CPU ms/file)"
        others = 0.0
        if r.machine_cpu is not None and r.cpu_window:
            busy = r.machine_cpu / r.cpu_window
            others = max(0.0, busy - sum(r.cpu.values()) / r.cpu_window)
            line += f"; machine busy {busy:.2f} of {cores} cores, others (the bench, other users) {others:.2f}"
        if r is two:
            ceiling = cores / per_file
            line += f"\n    CPU-bound ceiling {ceiling:.1f} files/s ({cores} cores / {per_file * 1000:.2f} ms/file)"
            line += f": achieved {100 * r.rate / ceiling:.0f}% of it"
            if one is not None and one.rate:
                line += f"; the 2/1 ratio it allows {ceiling / one.rate:.2f}x (achieved {r.rate / one.rate:.2f}x)"
            if others >= 0.05:
                left = (cores - others) / per_file
                line += f"; with the {cores - others:.2f} cores the others left: {left:.1f} files/s"
        print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=300, help="burst size (files dropped at once)")
    ap.add_argument("--steady", type=int, default=100, help="files of the steady stream after the burst")
    ap.add_argument("--rate", type=float, default=20.0, help="files/s of the steady stream")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the alternated modes")
    ap.add_argument("--backload", type=int, default=1000, help="files of the back-load mode")
    ap.add_argument("--backload-via", default="ingest,watcher", help="back-load through: ingest, watcher")
    ap.add_argument(
        "--backload-folder",
        type=Path,
        help="back-load this folder (e.g. one written by an earlier run: 100 000 files take 5-12 min to write);"
        " with --write-backload, write --backload files to it first and keep it",
    )
    ap.add_argument(
        "--write-backload",
        action="store_true",
        help="write the back-load's files to --backload-folder (which must not hold files) and keep them there",
    )
    ap.add_argument(
        "--compare",
        type=Path,
        help="also run the embedded, `dxa ingest` and Celery modes with the code of this source tree",
    )
    ap.add_argument("--modes", default="parse,embedded,celery1,celery2")
    ap.add_argument("--logs", type=Path, help="copy the Celery modes' service logs to this folder")
    ap.add_argument("--profile", type=Path, help="py-spy each mode's burst; collapsed stacks go to this folder")
    args = ap.parse_args(argv)
    if args.profile:
        PROFILE.append(args.profile)
    if args.logs:
        LOGS.append(args.logs)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    print(f"loadavg before: {loadavg()}", flush=True)
    samples = load_samples()
    if any(m != "backload" for m in modes):
        batch = make_batch(samples, args.files + args.steady)
        burst, steady = batch[: args.files], batch[args.files :]
        distinct = len({f.sha256 for f in batch})
        print(f"burst {len(burst)} files + steady {len(steady)} at {args.rate:g}/s ({distinct} distinct in all)")
        for round_ in range(1, args.rounds + 1):
            parse = parse_only(burst)
            results: list[Result] = []
            for mode in modes:
                if mode == "embedded":
                    results.append(embedded(burst, steady, args.rate))
                    if args.compare:
                        print(f"  ... round {round_}: {results[-1].mode}: {results[-1].rate:.1f} files/s", flush=True)
                        results.append(embedded(burst, steady, args.rate, root=args.compare))
                elif mode.startswith("celery"):
                    processes = int(mode.removeprefix("celery") or 1)
                    results.append(scaled(burst, steady, args.rate, processes))
                    if args.compare:
                        print(f"  ... round {round_}: {results[-1].mode}: {results[-1].rate:.1f} files/s", flush=True)
                        results.append(scaled(burst, steady, args.rate, processes, args.compare))
                else:
                    continue
                print(f"  ... round {round_}: {results[-1].mode}: {results[-1].rate:.1f} files/s", flush=True)
            print(f"\nround {round_} (loadavg {loadavg()})")
            print_round(results, parse)
            print(flush=True)
    if "backload" in modes:
        with tempfile.TemporaryDirectory(prefix="dxa-backload-") as tmp:
            folder = Path(tmp) / "archive-to-load"
            t0 = time.perf_counter()
            if args.write_backload:
                if not args.backload_folder or files_below(args.backload_folder):
                    ap.error("--write-backload needs a --backload-folder without files")
                folder = args.backload_folder
                size = write_backload(samples, args.backload, folder)
                print(
                    f"back-load: {args.backload} files written to {folder}, kept ({size / 2**20:.0f} MB, "
                    f"{time.perf_counter() - t0:.0f} s; loadavg {loadavg()})",
                    flush=True,
                )
            elif args.backload_folder:
                folder = args.backload_folder
                args.backload = len(files_below(folder))
                print(f"back-load: {args.backload} files in {folder}", flush=True)
            else:
                size = write_backload(samples, args.backload, folder)
                print(
                    f"back-load: {args.backload} files written ({size / 2**20:.0f} MB, "
                    f"{time.perf_counter() - t0:.0f} s; loadavg {loadavg()})",
                    flush=True,
                )
            head = f"{'mode':<42} {'files':>7} {'wall s':>8} {'files/s':>8}"
            print(f"{head} {'CPU ms/f':>9} {'RSS start':>10} {'RSS mid':>8} {'RSS end':>8} {'RSS max':>8}")
            runs: list[Callable[[Path, int], Backload]] = []
            for via in [v.strip() for v in args.backload_via.split(",") if v.strip()]:
                runs.append(backload_watcher if via == "watcher" else backload_ingest)
                if via == "ingest" and args.compare:  # alternated with another checkout's code
                    runs.append(lambda f, n: backload_ingest(f, n, args.compare))
                elif via == "watcher" and args.compare:
                    runs.append(lambda f, n: backload_watcher(f, n, args.compare))
            for run in runs:
                r = run(folder, args.backload)
                rate = args.backload / r.seconds if r.seconds else 0.0
                mb = [f"{r.at(x) / 2**20:.0f} MB" for x in (0.0, 0.5, 1.0)]
                cpu = f"{r.cpu / args.backload * 1000:.1f}" if r.cpu is not None else "-"
                print(
                    f"{r.mode:<42} {args.backload:>7} {r.seconds:>8.1f} {rate:>8.1f} {cpu:>9}"
                    f" {mb[0]:>10} {mb[1]:>8} {mb[2]:>8} {max(r.rss, default=0) / 2**20:>5.0f} MB",
                    flush=True,
                )
                if r.summary:
                    print(f"  {r.summary}  (loadavg {loadavg()})", flush=True)
    print(f"loadavg after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
