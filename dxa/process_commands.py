"""The long-running processes of `dxa` (serve, web, worker, beat, watch, storescp) and what
operators ask of them (status, health)."""

from __future__ import annotations

import argparse
import json
import logging

from dxa import wiring
from dxa.cli_support import UserError, configure_logging, context, settings_now
from settings import Settings

log = logging.getLogger("dxa")


def cmd_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from db.operations import STALE_AFTER, snapshot

    settings = settings_now()
    ctx = context(settings)
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

    healthy, line = check(settings_now(), args.service)
    print(line)
    return 0 if healthy else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from dxa.embedded import serve

    configure_logging()
    settings = settings_now()
    # everything in one process: its runner threads run the jobs, nothing is sent to a broker
    return serve(context(settings, dispatch=False), host=args.host or settings.host, port=args.port or settings.port)


def cmd_web(args: argparse.Namespace) -> int:
    from dxa.embedded import run_web

    configure_logging()
    from services.users import ensure_first_admin

    settings = settings_now()
    ctx = context(settings)
    ensure_first_admin(ctx.sessions, settings)
    run_web(ctx, host=args.host or settings.host, port=args.port or settings.port)
    return 0


def _require_broker(settings: Settings) -> None:
    if not settings.broker_url:
        raise UserError("DXA_BROKER_URL is not set: use `dxa serve` for the embedded mode")


def cmd_worker(args: argparse.Namespace) -> int:
    from dxa.embedded import run_celery_worker

    settings = settings_now()
    _require_broker(settings)
    context(settings)
    run_celery_worker(args.concurrency)
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    from dxa.embedded import run_celery_beat

    settings = settings_now()
    _require_broker(settings)
    run_celery_beat(settings)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from dxa.embedded import watch_forever
    from services.recovery import recover_files

    configure_logging()
    settings = settings_now()
    _require_broker(settings)
    ctx = context(settings)
    recover_files(ctx)
    watch_forever(ctx)
    return 0


def cmd_storescp(args: argparse.Namespace) -> int:
    from ingest.storescp import serve as serve_scp

    configure_logging()
    settings = settings_now()
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
