"""What each `dxa` command does: build the context (`dxa.wiring`), call one use case of
`services`, print the outcome.

Output is for the operator at the terminal: one line per file, plain words, and no patient
identifiers (a back-loading run's output often ends up pasted into a ticket).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from db.migrate import upgrade
from dxa import wiring
from services.context import Context, no_submit
from services.csv_rows import ImportError_
from settings import Settings, load_settings

log = logging.getLogger("dxa")


class UserError(Exception):
    """A mistake the operator can fix (bad file, bad option); printed without a traceback."""


def _settings() -> Settings:
    return load_settings()


def _context(settings: Settings | None = None, *, dispatch: bool = True) -> Context:
    return wiring.context(settings or _settings(), dispatch=dispatch)


def _run_queued_evaluations(ctx: Context) -> int:
    """Embedded mode: run the evaluations a command queued now, so the command returns with its
    patients re-evaluated (in the scaled mode they were sent to the Celery workers)."""
    from services.runner import run_next

    if ctx.submit is not no_submit:
        return 0
    count = 0
    while run_next(ctx, kinds=("evaluate_patient",)) is not None:
        count += 1
    return count


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- schema


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    from db.engine import make_engine, session_factory
    from services.users import ensure_first_admin

    _logging()
    engine = make_engine(settings.db_url)
    upgrade(engine)
    print("database schema is up to date")
    created = ensure_first_admin(session_factory(engine), settings)
    if created:
        print(f"first administrator {created} created (password from DXA_ADMIN_PASSWORD_FILE)")
    return 0


# --------------------------------------------------------------------------- ingest


def _expand(paths: list[Path]) -> Iterator[Path]:
    from ingest.watcher import iter_files

    for path in paths:
        if path.is_dir():
            yield from sorted(iter_files(path))
        elif path.is_file():
            yield path
        else:
            raise UserError(f"{path}: no such file or folder")


def cmd_ingest(args: argparse.Namespace) -> int:
    ctx = _context(dispatch=False)  # back-loading runs its own jobs, whatever the deployment
    files = list(_expand(args.paths))
    counts = {"ingested": 0, "duplicate": 0, "quarantined": 0, "unfinished": 0}
    for path in files:
        outcome, detail = _ingest_one(ctx, path)
        counts[outcome] += 1
        print(f"{path}: {outcome} ({detail})" if outcome != "quarantined" else f"{path}: quarantined: {detail}")
    evaluated = _run_queued_evaluations(ctx)
    print(
        f"{len(files)} files: {counts['ingested']} ingested, {counts['duplicate']} duplicate, "
        f"{counts['quarantined']} quarantined"
        + (f", {counts['unfinished']} NOT finished (run again)" if counts["unfinished"] else "")
        + f"; {evaluated} patients re-evaluated"
    )
    return 0 if counts["unfinished"] == 0 else 1


def _ingest_one(ctx: Context, path: Path) -> tuple[str, str]:
    from services.intake import intake
    from services.runner import run_job

    received = intake(ctx, path, copy=True)
    if received.outcome == "duplicate":
        return "duplicate", f"same bytes as a file already received, now {received.prior_status}"
    assert received.job_id is not None
    for _ in range(ctx.settings.max_attempts + 1):
        result = run_job(ctx, received.job_id)
        if result is None:
            return "unfinished", "job is held by another process"
        if result.outcome in ("ingested", "duplicate", "quarantined"):
            return result.outcome, result.detail
    return "unfinished", "parsing kept failing"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from services.evaluation import evaluate_all

    count = evaluate_all(_context())
    print(f"{count} patients re-evaluated")
    return 0


# --------------------------------------------------------------------------- export


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


def cmd_export(args: argparse.Namespace) -> int:
    from services.exports import export_all

    try:
        text = export_all(_context(), args.format, identifier=args.patient)
    except LookupError:
        raise UserError("no patient with that identifier") from None
    _write(text, args.out)
    return 0


# --------------------------------------------------------------------------- imports


def _import(run: Any) -> Any:
    """Run one import use case; a bad row rolls everything back."""
    try:
        return run()
    except ImportError_ as exc:
        raise UserError(f"{exc}; nothing was imported") from None


def cmd_therapies_import(args: argparse.Namespace) -> int:
    from services.therapies import import_therapies

    ctx = _context()
    touched = _import(lambda: import_therapies(ctx, args.file))
    _run_queued_evaluations(ctx)
    print(f"therapies imported for {len(touched)} patients; their next scans were recomputed")
    return 0


def cmd_precision_import(args: argparse.Namespace) -> int:
    from services.precision import import_precision

    ctx = _context()
    for r in _import(lambda: import_precision(ctx, args.file)):
        f = r.facility
        print(
            f"{r.device.manufacturer} {r.device.model} S/N {r.device.serial} {r.site}: "
            f"RMS-SD {f.rms_sd_g_cm2:.4f} g/cm2, %CV {f.rms_cv_percent:.2f}, "
            f"LSC {f.lsc_g_cm2:.3f} g/cm2 ({f.degrees_of_freedom} df)"
            + "".join(f"\n  warning: {w}" for w in r.warnings)
        )
    _run_queued_evaluations(ctx)
    return 0


def cmd_precision_show(args: argparse.Namespace) -> int:
    from db.calibration import latest_studies

    ctx = _context()
    with ctx.sessions() as session:
        studies = latest_studies(session)
        if not studies:
            print("no precision study yet: comparisons use the configured default LSC (lsc_source default)")
        for s in studies:
            d = s.device
            rms = f"{s.rms_sd_g_cm2:.4f}" if s.rms_sd_g_cm2 is not None else "-"
            lsc = f"{s.lsc_g_cm2:.3f}" if s.lsc_g_cm2 is not None else "-"
            print(
                f"{d.manufacturer} {d.model} S/N {d.serial} {s.site}: RMS-SD {rms} g/cm2, LSC {lsc} g/cm2, "
                f"{len(s.measurements)} scans"
            )
    return 0


def cmd_crosscal_import(args: argparse.Namespace) -> int:
    from services.crosscal import import_crosscal

    ctx = _context()
    saved = _import(lambda: import_crosscal(ctx, args.file))
    for r in saved.previews:
        print(
            f"{r.kind} {r.device_a.model} S/N {r.device_a.serial} -> {r.device_b.model} S/N {r.device_b.serial} "
            f"{r.site}: slope {r.slope:.4f}, intercept {r.intercept:.4f}, LSC {r.lsc_g_cm2:.3f} g/cm2"
            + (f" ({r.note})" if r.note else "")
        )
    _run_queued_evaluations(ctx)
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """Write the demo cohort into the inbox, let the running service ingest it (or ingest it
    here with --now), then import its precision studies, cross-calibration and therapies."""
    import tempfile

    from dxa import demo

    ctx = _context()
    made = demo.cohort()
    paths = demo.write_files(ctx.settings.inbox_dir, made.files)
    print(f"{len(paths)} demo files written to {ctx.settings.inbox_dir / demo.DEMO_FOLDER} (all data invented)")
    if args.now:
        for path in paths:
            outcome, detail = _ingest_one(ctx, path)
            print(f"  {path.name}: {outcome} ({detail})")
            path.unlink(missing_ok=True)
    else:
        print(f"waiting up to {args.wait:.0f} s for the running service to ingest them…")
        done = demo.wait_until_received(ctx.sessions, made.files, args.wait)
        for name, status in sorted(done.items()):
            print(f"  {name}: {status}")
        if len(done) < len(made.files):
            raise UserError(
                "the service has not finished the demo files: is `make run` (dxa serve) running on this "
                "data folder? Start it, or run `dxa demo --now` to ingest here"
            )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, text in (
            ("demo-precision.csv", made.precision_csv),
            ("demo-crosscal.csv", made.crosscal_csv),
            ("demo-therapies.csv", made.therapies_csv),
        ):
            (folder / name).write_text(text, encoding="utf-8")
        cmd_precision_import(argparse.Namespace(file=folder / "demo-precision.csv"))
        cmd_crosscal_import(argparse.Namespace(file=folder / "demo-crosscal.csv"))
        cmd_therapies_import(argparse.Namespace(file=folder / "demo-therapies.csv"))
    print("demo ready: patients DEMO-0001 … DEMO-0004 on the dashboard (invented data; delete before real use)")
    return 0


# --------------------------------------------------------------------------- users


def _read_password(path: Path | None, stream: TextIO) -> str:
    text = path.read_text(encoding="utf-8") if path else stream.readline()
    return text.strip("\r\n")


def _account_change(fn: Any) -> None:
    """Run one `services.users` change in one transaction; a refusal is the operator's to fix."""
    from services.users import AccountError

    ctx = _context()
    try:
        with ctx.sessions.begin() as session:
            fn(session)
    except AccountError as exc:
        raise UserError(str(exc)) from None


def cmd_users_list(args: argparse.Namespace) -> int:
    from services.users import accounts

    ctx = _context()
    with ctx.sessions() as session:
        rows = accounts(session)
    if not rows:
        print("no accounts yet: `dxa users add NAME --role admin`")
    for a in rows:
        print(f"{a.username}\t{a.role}\t{'active' if a.active else 'disabled'}\tlast sign-in {a.last_login or 'never'}")
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    from services import users

    password = _read_password(args.password_file, sys.stdin)
    _account_change(lambda s: users.add(s, args.username, password, args.role))
    print(f"user {args.username} added with role {args.role}")
    return 0


def cmd_users_passwd(args: argparse.Namespace) -> int:
    from services import users

    password = _read_password(args.password_file, sys.stdin)
    _account_change(lambda s: users.change_password(s, args.username, password))
    print(f"password of {args.username} changed")
    return 0


def cmd_users_disable(args: argparse.Namespace) -> int:
    from services import users

    _account_change(lambda s: users.set_enabled(s, args.username, False))
    print(f"user {args.username} disabled")
    return 0


def cmd_users_enable(args: argparse.Namespace) -> int:
    from services import users

    _account_change(lambda s: users.set_enabled(s, args.username, True))
    print(f"user {args.username} enabled")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    from services import users

    _account_change(lambda s: users.remove(s, args.username))
    print(f"user {args.username} removed")
    return 0


def cmd_users_token(args: argparse.Namespace) -> int:
    from db.accounts import create_api_token, get_user

    ctx = _context()
    with ctx.sessions.begin() as session:
        user = get_user(session, args.username)
        if user is None:
            raise UserError(f"no user {args.username!r}")
        _, secret = create_api_token(session, user, "cli")
    print(secret)
    return 0


# --------------------------------------------------------------------------- processes


def cmd_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from db.operations import STALE_AFTER, snapshot

    settings = _settings()
    ctx = _context(settings)
    count = wiring.broker_depth(settings)
    depth = count() if count is not None else None
    with ctx.sessions() as session:
        snap = snapshot(session, broker_depth=depth)
    if args.json:
        print(json.dumps({**asdict(snap), "at": snap.at.isoformat()}, indent=2))
        return 0
    mode = "embedded (the job table is the queue)" if settings.embedded else "scaled (Celery)"
    waiting = "unknown (broker unreachable)" if depth is None and not settings.embedded else depth
    oldest = f"{snap.oldest_queued_s:.0f} s" if snap.oldest_queued_s is not None else "none"
    print(f"mode: {mode}")
    if not settings.embedded:
        print(f"broker queue: {waiting} messages waiting")
    print("jobs: " + ", ".join(f"{n} {state}" for state, n in snap.jobs.items()) + f"; oldest queued: {oldest}")
    print(f"stuck jobs (silent over {STALE_AFTER.total_seconds():.0f} s): {len(snap.stuck)}")
    for j in snap.stuck:
        print(f"  job {j.id} {j.kind} on {j.worker or '?'}, silent for {j.silent_s:.0f} s")
    print("files: " + ", ".join(f"{n} {status}" for status, n in snap.files.items()))
    print(f"files finished in the last hour: {snap.files_last_hour}")
    reasons = ", ".join(f"{n} {reason}" for reason, n in snap.quarantine.items()) or "none"
    print(f"quarantine by reason: {reasons}")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from dxa.health import check

    healthy, line = check(_settings(), args.service)
    print(line)
    return 0 if healthy else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from dxa.embedded import serve

    _logging()
    settings = _settings()
    # everything in one process: its runner threads run the jobs, nothing is sent to a broker
    return serve(_context(settings, dispatch=False), host=args.host or settings.host, port=args.port or settings.port)


def cmd_web(args: argparse.Namespace) -> int:
    from dxa.embedded import run_web

    _logging()
    from services.users import ensure_first_admin

    settings = _settings()
    ctx = _context(settings)
    ensure_first_admin(ctx.sessions, settings)
    run_web(ctx, host=args.host or settings.host, port=args.port or settings.port)
    return 0


def _require_broker(settings: Settings) -> None:
    if not settings.broker_url:
        raise UserError("DXA_BROKER_URL is not set: use `dxa serve` for the embedded mode")


def cmd_worker(args: argparse.Namespace) -> int:
    from dxa.embedded import run_celery_worker

    settings = _settings()
    _require_broker(settings)
    _context(settings)
    run_celery_worker(args.concurrency)
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    from dxa.embedded import run_celery_beat

    settings = _settings()
    _require_broker(settings)
    run_celery_beat(settings)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from dxa.embedded import watch_forever
    from services.recovery import recover_files

    _logging()
    settings = _settings()
    _require_broker(settings)
    ctx = _context(settings)
    recover_files(ctx)
    watch_forever(ctx)
    return 0


def cmd_storescp(args: argparse.Namespace) -> int:
    from ingest.storescp import serve as serve_scp

    _logging()
    settings = _settings()
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    if not settings.allowed_ae_titles:
        log.warning("DXA_STORESCP_ALLOWED_AES is empty: every sender will be refused at association")
    serve_scp(
        settings.inbox_dir,
        settings.storescp_ae_title,
        settings.storescp_host,
        settings.storescp_port,
        settings.allowed_ae_titles,
        max_associations=settings.storescp_max_associations,
    )
    return 0
