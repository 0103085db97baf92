"""What each `dxa` command does: wiring settings, database and pipeline, then one call.

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

from db.migrate import is_up_to_date, upgrade
from dxa.settings import Settings, load_settings
from workers.context import Context, build_context

log = logging.getLogger("dxa")


class UserError(Exception):
    """A mistake the operator can fix (bad file, bad option); printed without a traceback."""


def _settings() -> Settings:
    return load_settings()


def _context(settings: Settings | None = None, **kwargs: Any) -> Context:
    """A context on an up-to-date schema (SQLite is created on first use; PostgreSQL deployments
    run `dxa migrate` once, but an out-of-date schema is upgraded here too)."""
    ctx = build_context(settings or _settings(), **kwargs)
    if not is_up_to_date(ctx.engine):
        upgrade(ctx.engine)
    return ctx


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- schema


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    from db.engine import make_engine, session_factory
    from dxa.users import ensure_first_admin

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
    from workers import pipeline

    ctx = _context()
    files = list(_expand(args.paths))
    counts = {"ingested": 0, "duplicate": 0, "quarantined": 0, "unfinished": 0}
    for path in files:
        outcome, detail = _ingest_one(ctx, path)
        counts[outcome] += 1
        print(f"{path}: {outcome} ({detail})" if outcome != "quarantined" else f"{path}: quarantined: {detail}")
    evaluated = 0
    while pipeline.run_next(ctx, kinds=("evaluate_patient",)) is not None:
        evaluated += 1
    print(
        f"{len(files)} files: {counts['ingested']} ingested, {counts['duplicate']} duplicate, "
        f"{counts['quarantined']} quarantined"
        + (f", {counts['unfinished']} NOT finished (run again)" if counts["unfinished"] else "")
        + f"; {evaluated} patients re-evaluated"
    )
    return 0 if counts["unfinished"] == 0 else 1


def _ingest_one(ctx: Context, path: Path) -> tuple[str, str]:
    from workers import pipeline

    intake = pipeline.intake(ctx, path, copy=True)
    if intake.outcome == "duplicate":
        return "duplicate", f"same bytes as a file already received, now {intake.prior_status}"
    assert intake.job_id is not None
    for _ in range(ctx.settings.max_attempts + 1):
        result = pipeline.run_job(ctx, intake.job_id)
        if result is None:
            return "unfinished", "job is held by another process"
        if result.outcome in ("ingested", "duplicate", "quarantined"):
            return result.outcome, result.detail
    return "unfinished", "parsing kept failing"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from workers import pipeline

    count = pipeline.evaluate_all(_context())
    print(f"{count} patients re-evaluated")
    return 0


# --------------------------------------------------------------------------- export


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


def cmd_export(args: argparse.Namespace) -> int:
    from db.accounts import record_audit
    from db.export import export_patients

    ctx = _context()
    with ctx.sessions.begin() as session:
        patients = list(export_patients(session, identifier=args.patient))
        if args.patient is not None and not patients:
            raise UserError("no patient with that identifier")
        record_audit(
            session,
            actor="cli",
            action="export",
            patient_id=None,
            detail={
                "format": args.format,
                "patients": len(patients),
                "scope": "one" if args.patient else "all",
            },
        )
    if args.format == "json":
        _write(json.dumps(patients, indent=2, ensure_ascii=False) + "\n", args.out)
    elif args.format == "csv":
        from web.exports import comparisons_csv

        _write(comparisons_csv(patients), args.out)
    else:
        from web.fhir import build_bundle

        bundles = [build_bundle(p) for p in patients]
        payload: Any = bundles[0] if args.patient is not None else bundles
        _write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", args.out)
    return 0


# --------------------------------------------------------------------------- imports


def _run_import(fn: Any) -> tuple[Context, Any]:
    """Run one importer, `fn(session, ctx)`, in one transaction; a bad row rolls everything back."""
    from dxa.imports import ImportError_

    ctx = _context()
    try:
        with ctx.sessions.begin() as session:
            result = fn(session, ctx)
    except ImportError_ as exc:
        raise UserError(f"{exc}; nothing was imported") from None
    return ctx, result


def cmd_therapies_import(args: argparse.Namespace) -> int:
    from dxa.imports import import_therapies
    from workers import pipeline

    ctx, touched = _run_import(lambda session, _: import_therapies(session, args.file))
    for patient_id in touched:
        pipeline.evaluate(ctx, patient_id)
    print(f"therapies imported for {len(touched)} patients; their next scans were recomputed")
    return 0


def cmd_precision_import(args: argparse.Namespace) -> int:
    from dxa.imports import import_precision
    from workers import pipeline

    ctx, results = _run_import(lambda session, c: import_precision(session, args.file, c.monitoring))
    for r in results:
        print(
            f"{r.device.manufacturer} {r.device.model} S/N {r.device.serial} {r.site}: "
            f"RMS-SD {r.facility.rms_sd_g_cm2:.4f} g/cm2, %CV {r.facility.rms_cv_percent:.2f}, "
            f"LSC {r.facility.lsc_g_cm2:.3f} g/cm2 ({r.facility.degrees_of_freedom} df)"
            + "".join(f"\n  warning: {w}" for w in r.warnings)
        )
    pipeline.evaluate_all(ctx)
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
    from dxa.imports import import_crosscal
    from workers import pipeline

    ctx, results = _run_import(lambda session, c: import_crosscal(session, args.file, c.monitoring))
    for r in results:
        print(
            f"{r.kind} {r.device_a.model} S/N {r.device_a.serial} -> {r.device_b.model} S/N {r.device_b.serial} "
            f"{r.site}: slope {r.slope:.4f}, intercept {r.intercept:.4f}, LSC {r.lsc_g_cm2:.3f} g/cm2"
            + (f" ({r.note})" if r.note else "")
        )
    pipeline.evaluate_all(ctx)
    return 0


# --------------------------------------------------------------------------- users


def _read_password(path: Path | None, stream: TextIO) -> str:
    text = path.read_text(encoding="utf-8") if path else stream.readline()
    return text.strip("\r\n")


def _account_change(fn: Any) -> None:
    """Run one `dxa.users` change in one transaction; a refusal is the operator's to fix."""
    from dxa.users import AccountError

    ctx = _context()
    try:
        with ctx.sessions.begin() as session:
            fn(session)
    except AccountError as exc:
        raise UserError(str(exc)) from None


def cmd_users_list(args: argparse.Namespace) -> int:
    from dxa.users import accounts

    ctx = _context()
    with ctx.sessions() as session:
        rows = accounts(session)
    if not rows:
        print("no accounts yet: `dxa users add NAME --role admin`")
    for a in rows:
        print(f"{a.username}\t{a.role}\t{'active' if a.active else 'disabled'}\tlast sign-in {a.last_login or 'never'}")
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    from dxa import users

    password = _read_password(args.password_file, sys.stdin)
    _account_change(lambda s: users.add(s, args.username, password, args.role))
    print(f"user {args.username} added with role {args.role}")
    return 0


def cmd_users_passwd(args: argparse.Namespace) -> int:
    from dxa import users

    password = _read_password(args.password_file, sys.stdin)
    _account_change(lambda s: users.change_password(s, args.username, password))
    print(f"password of {args.username} changed")
    return 0


def cmd_users_disable(args: argparse.Namespace) -> int:
    from dxa import users

    _account_change(lambda s: users.set_enabled(s, args.username, False))
    print(f"user {args.username} disabled")
    return 0


def cmd_users_enable(args: argparse.Namespace) -> int:
    from dxa import users

    _account_change(lambda s: users.set_enabled(s, args.username, True))
    print(f"user {args.username} enabled")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    from dxa import users

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
    depth = None
    if not settings.embedded:
        from workers.tasks import broker_depth

        depth = broker_depth()
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
    return serve(_context(settings), host=args.host or settings.host, port=args.port or settings.port)


def cmd_web(args: argparse.Namespace) -> int:
    from dxa.embedded import run_web

    _logging()
    from dxa.users import ensure_first_admin

    settings = _settings()
    ctx = _context(settings)
    ensure_first_admin(ctx.sessions, settings)
    run_web(ctx, host=args.host or settings.host, port=args.port or settings.port)
    return 0


def _require_broker(settings: Settings) -> None:
    if not settings.broker_url:
        raise UserError("DXA_BROKER_URL is not set: use `dxa serve` for the embedded mode")


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    _require_broker(settings)
    _context(settings)
    from workers.celery_app import app

    app.worker_main(["worker", f"--concurrency={args.concurrency}", "--loglevel=INFO", "--without-gossip"])
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    settings = _settings()
    _require_broker(settings)
    from workers.celery_app import app

    schedule = settings.data_dir / "celerybeat-schedule"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app.start(
        ["beat", "--loglevel=INFO", f"--schedule={schedule}", "--scheduler=workers.celery_app:HeartbeatScheduler"]
    )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from dxa.embedded import watch_forever
    from workers import pipeline
    from workers.tasks import submit

    _logging()
    settings = _settings()
    _require_broker(settings)
    ctx = _context(settings, submit=submit)
    pipeline.recover_files(ctx)
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
