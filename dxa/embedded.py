"""The long-running processes: the folder watcher, the embedded job runner, the web server, and
the Celery worker and beat of the scaled mode.

`dxa serve` runs all three in one process on SQLite (a workstation, no Redis). At scale
the same loops run as separate processes (`dxa watch`, Celery workers, `dxa web`), so there is
one code path for both deployments.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from datetime import date
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dxa.wiring import make_app
from ingest.file_events import ClosedFiles
from ingest.watcher import FileState, InboxListing, OddEntries, ReadinessTracker, scan_inbox
from services import evaluation, inbox_entries, recovery, runner
from services.bytestore import uses_database
from services.context import Context
from services.files import read_error_words
from services.intake import IntakeResult, UnreadableClaim, claim_many, intake_many, register_claims
from services.logsafe import describe
from settings import Settings

log = logging.getLogger("dxa")

DEMO_PASSWORD = "dxa-demo-2024"
RUNNER_IDLE_S = 0.5
SWEEP_EVERY_S = 60.0
# Claim failures that are this host's, not the file's: every file would fail alike, and each is
# tried again at the next scan once the fault is fixed.
_OUR_SIDE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE, errno.ENOMEM})
INTAKE_BATCH = 64  # files claimed and registered together by one scan's transaction
# Files claimed and handed to this process's writer (SQLite) and not registered yet, beyond which
# the watcher claims no more, and below half of which it scans again. A hospital's archive dropped
# at once (100 000 files) waits in the inbox rather than in this process's memory, and the inbox
# is not listed every scan while the writer has enough to do: each listing of a big inbox took the
# interpreter from the writer (issue 13: the watcher spent more than half its time listing).
HANDED_AHEAD = 1024
# Set by the watcher when it registered files: idle runners of this process start at once instead
# of at their next poll (the job table stays the queue; this only shortens the wait).
_work_arrived = threading.Event()


def watch_once(
    ctx: Context,
    tracker: ReadinessTracker,
    odd: OddEntries | None = None,
    events: ClosedFiles | None = None,
    listing: InboxListing | None = None,
) -> int:
    """One scan of the inbox: claim every file that is ready, and refuse (log, count, and once they
    persist record and move aside) entries that are not regular files. Returns how many were claimed.

    With the embedded writer of this process running (SQLite: `services.runner.Pipeline`), the
    claims are handed to it to register: the watcher then writes nothing to the database, whose one
    write lock it would otherwise take turns for with the writer (and lose: SQLite's busy wait
    sleeps while the writer's transactions follow each other). It hands at most `HANDED_AHEAD`
    files ahead of the writer's registering, and does not list the inbox while more than half that
    wait; the files a listing found ready beyond that bound are handed at the next calls without
    listing the inbox again (`ReadinessTracker.take_deferred`), each checked unchanged.

    `events` (inotify, `watch_forever`): files their writer closed are ready at this scan, without
    waiting for the next one; read again after the scan, so a file written again meanwhile waits.
    `listing` (`watch_forever`): the inbox's folders are listed again only where they may have
    changed (inotify's events, or their mtime), not every folder at every scan."""
    inbox = ctx.settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    claimed = 0
    if events is not None:
        events.drain()
    writer = runner.writer_for(ctx)
    if writer is not None and writer.handed >= HANDED_AHEAD // 2:
        return 0  # the writer has enough to register: the inbox is listed once it has less
    if writer is not None and tracker.deferred:  # ready at the last listing, not claimed yet: no listing
        ready = _unchanged(tracker, tracker.take_deferred(HANDED_AHEAD - writer.handed))
    else:
        ready = _scan(ctx, tracker, odd, events, listing)
    if writer is not None and len(ready) > HANDED_AHEAD - writer.handed:
        room = max(0, HANDED_AHEAD - writer.handed)
        tracker.defer(ready[room:])  # handed at the next calls, each still as it was (`_unchanged`)
        ready = ready[:room]
    for start in range(0, len(ready), INTAKE_BATCH):  # one flush of work/ and one commit per chunk
        chunk = [Path(p) for p in ready[start : start + INTAKE_BATCH]]
        writer = runner.writer_for(ctx)
        outcomes: dict[Path, IntakeResult | Exception | None]
        if writer is None:
            outcomes = dict(zip(chunk, intake_many(ctx, chunk, copy=False), strict=True))
        else:
            claims, failed = claim_many(ctx, chunk, copy=False)
            outcomes = {**failed}
            if writer.hand(claims):
                outcomes.update((path, None) for path, _ in claims)
            else:
                outcomes.update(
                    zip((path for path, _ in claims), register_claims(ctx, claims, copy=False), strict=True)
                )
        for path in chunk:
            result = outcomes[path]
            if not isinstance(result, Exception):
                claimed += 1
            elif isinstance(result, FileNotFoundError):
                tracker.forget(str(path))  # taken by another watcher, or removed by the sender
            elif isinstance(result, UnreadableClaim):
                continue  # set aside for QA, and logged, by the intake (`services.inbox_entries`)
            elif isinstance(result, OSError) and result.errno not in _OUR_SIDE:  # waits, rather than fail each scan
                count, wait = tracker.failed(str(path), time.time())
                words = read_error_words(result)
                ident = inbox_entries.entry_id(inbox, str(path))
                log.warning("inbox: entry %s could not be claimed (%s); tried again in %.0f s", ident, words, wait)
                if count == inbox_entries.RECORD_AFTER:
                    inbox_entries.record_unclaimable(ctx, path, words)
            else:
                # A path, or a driver's message quoting the row, can hold a patient's name: the type only.
                log.warning("could not claim a file from the inbox (%s); it is tried again", describe(result))
        if claimed:
            _work_arrived.set()
    return claimed


def _scan(
    ctx: Context,
    tracker: ReadinessTracker,
    odd: OddEntries | None,
    events: ClosedFiles | None,
    listing: InboxListing | None,
) -> list[str]:
    """List the inbox: the files ready, the odd entries refused."""
    inbox = ctx.settings.inbox_dir
    if listing is not None:
        files, others = listing.scan(time.time(), events.unchanged_folders() if events is not None else None)
    else:
        files, others = scan_inbox(inbox)
    if odd is not None:
        inbox_entries.refuse(ctx, inbox, *odd.observe(others, time.time()))
    closed: set[str] = set()
    if events is not None:  # marks of files gone (or never listed: temporary names) dropped
        events.closed.intersection_update(files.keys() | events.drain())
        closed = events.closed & files.keys()
    return list(tracker.observe(files, time.time(), closed))


def _unchanged(tracker: ReadinessTracker, deferred: list[tuple[str, FileState]]) -> list[str]:
    """The deferred files still as they were when found ready (`lstat`, links not followed): one
    written again, replaced by something else or gone meanwhile waits for a scan to find it again."""
    ready = []
    for path, state in deferred:
        try:
            st = os.lstat(path)
        except OSError:
            tracker.forget(path)
            continue
        if stat.S_ISREG(st.st_mode) and FileState(st.st_size, st.st_mtime) == state:
            ready.append(path)
        else:
            tracker.forget(path)
    return ready


def _write_host_copies(ctx: Context) -> None:
    """The database mode: archive and quarantine copies of what workers on any host finished."""
    from services.host_copies import write_host_copies

    try:
        write_host_copies(ctx)
    except Exception as exc:  # a driver's message can quote a row: the type and place only
        log.warning("could not write the archive copies of finished files (%s); retrying", describe(exc))


def watch_forever(ctx: Context, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    tracker = ReadinessTracker(ctx.settings.min_file_age_s)
    odd = OddEntries(inbox_entries.persist_s(ctx.settings))
    log.info("watching the inbox every %.1f s", ctx.settings.scan_interval_s)
    from workers.heartbeat import touch_heartbeat

    ctx.settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    events = ClosedFiles.open(ctx.settings.inbox_dir)  # None: scans alone (no inotify)
    listing = InboxListing(ctx.settings.inbox_dir)
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                watch_once(ctx, tracker, odd, events, listing)
                if uses_database(ctx):
                    _write_host_copies(ctx)
            except Exception as exc:  # the database restarting, say: the next scan tries again
                log.warning("inbox scan failed (%s); retrying", describe(exc))
            touch_heartbeat(ctx.settings, "watch")
            if events is None:
                stop.wait(ctx.settings.scan_interval_s)
            else:  # the next scan at once when a file is closed (the scans go on meanwhile)
                events.wait(stop, ctx.settings.scan_interval_s, started)
    finally:
        if events is not None:
            events.close()


def run_jobs_forever(ctx: Context, stop: threading.Event, *, refresh_daily: bool = True) -> None:
    """The embedded runner: take a batch of the oldest queued jobs, run it, repeat; idle briefly
    when none (a batch closes on its size or on what is queued now: a single file is not held).
    On SQLite the runner is the one writer of `services.runner.Pipeline` (files parsed in a
    thread of their own while the previous batch is stored). Once a day (one runner only) every
    patient is re-evaluated so due and overdue dates follow the calendar."""
    last_refresh: date | None = None if refresh_daily else date.max
    last_sweep = time.monotonic()
    pipeline = runner.Pipeline(ctx) if ctx.engine.dialect.name == "sqlite" else None
    try:
        while not stop.is_set():
            try:
                if refresh_daily and last_refresh != date.today():
                    evaluation.evaluate_all(ctx)
                    last_refresh = date.today()
                if time.monotonic() - last_sweep > SWEEP_EVERY_S:
                    recovery.recover_jobs(ctx)
                    last_sweep = time.monotonic()
                results = pipeline.step() if pipeline is not None else runner.run_batch(ctx)
            except Exception as exc:
                log.warning("job runner error (%s); retrying", describe(exc))
                results = []
                stop.wait(2.0)
            if pipeline is not None and pipeline.busy:
                continue
            if not results and _work_arrived.wait(RUNNER_IDLE_S):
                _work_arrived.clear()
    finally:
        if pipeline is not None:
            try:
                pipeline.close()
            except Exception as exc:
                log.warning("job runner stopped with a batch not stored (%s); it is queued again", describe(exc))


def runner_threads(ctx: Context, stop: threading.Event, workers: int) -> list[threading.Thread]:
    """The embedded runner threads: `workers` of them on PostgreSQL; one on SQLite, where writers
    queue on one lock anyway (it parses the next batch while it stores, `services.runner.Pipeline`)."""
    count = 1 if ctx.engine.dialect.name == "sqlite" else workers
    return [
        threading.Thread(
            target=run_jobs_forever, args=(ctx, stop), kwargs={"refresh_daily": i == 0}, name=f"runner-{i}", daemon=True
        )
        for i in range(count)
    ]


def ensure_demo_user(sessions: sessionmaker[Session], settings: Settings) -> str | None:
    """Embedded mode only: on a fresh installation with no DXA_ADMIN_USER configured, create the
    demo sign-in the README gives (its password changes with `dxa users passwd demo`); never
    touch an existing user base. Returns the password when the demo user was created."""
    from db.accounts import count_users, create_user

    if settings.admin_user:
        return None
    with sessions.begin() as session:
        if count_users(session):
            return None
        password = settings.demo_password or DEMO_PASSWORD
        create_user(session, settings.demo_user, password, "admin")
        return password


# How long an idle keep-alive connection stays open. uvicorn's 5 s default equals httpx's and is
# below what browsers (60-300 s) and reverse proxies (nginx upstream and load balancers: 60 s) keep
# a connection for reuse: a request sent on a connection the server closes at that moment gets no
# response at all ("server disconnected", seen by the soak's users under load). The server must
# keep it longer than any client, so the client is always the one to close an idle connection.
WEB_KEEP_ALIVE_S = 75


def run_web(ctx: Context, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        make_app(ctx),
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        timeout_keep_alive=WEB_KEEP_ALIVE_S,
    )


def serve(ctx: Context, host: str, port: int, workers: int = 2) -> int:
    """Everything in one process: recover what a crash left, watch, run jobs, serve the web app."""
    settings = ctx.settings
    for folder in (settings.inbox_dir, settings.work_dir, settings.archive_dir, settings.quarantine_dir):
        folder.mkdir(parents=True, exist_ok=True)
    recovered = recovery.recover(ctx, stale_after=None)
    if any(recovered.values()):
        log.info("recovered after an interruption: %s", recovered)
    from services.users import ensure_first_admin

    if settings.admin_user:
        ensure_first_admin(ctx.sessions, settings)
    created = ensure_demo_user(ctx.sessions, settings)
    stop = threading.Event()
    threads = [threading.Thread(target=watch_forever, args=(ctx, stop), name="watcher", daemon=True)]
    threads += runner_threads(ctx, stop, workers)
    for t in threads:
        t.start()
    print(f"DXA monitor (embedded) on http://{host}:{port}/  — drop files into {settings.inbox_dir}")
    if created:
        print(f"sign in as {settings.demo_user} / {created} (demo account: change it before real use)")
    try:
        run_web(ctx, host, port)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    return 0


def run_celery_worker(concurrency: int) -> None:
    from workers.celery_app import app

    app.worker_main(["worker", f"--concurrency={concurrency}", "--loglevel=INFO", "--without-gossip"])


def run_celery_beat(settings: Settings) -> None:
    from workers.celery_app import app

    schedule = settings.data_dir / "celerybeat-schedule"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app.start(
        ["beat", "--loglevel=INFO", f"--schedule={schedule}", "--scheduler=workers.celery_app:HeartbeatScheduler"]
    )
