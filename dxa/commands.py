"""The data commands of `dxa`: schema, ingest, evaluate, export, imports, demo. Each builds the
context, calls one use case of `services`, and prints the outcome.

Output is for the operator at the terminal: one line per file, plain words, and no patient
identifiers (a back-loading run's output often ends up pasted into a ticket).
"""

from __future__ import annotations

import argparse
import sys
from itertools import chain
from pathlib import Path
from typing import Any

from db.migrate import upgrade
from dxa.cli_support import UserError, configure_logging, context, run_queued_evaluations, settings_now
from services.csv_rows import ImportError_

# --------------------------------------------------------------------------- schema


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_now()
    from db.engine import make_engine, session_factory
    from services.users import ensure_first_admin

    configure_logging()
    engine = make_engine(settings.db_url)
    upgrade(engine)
    print("database schema is up to date")
    created = ensure_first_admin(session_factory(engine), settings)
    if created:
        print(f"first administrator {created} created (password from DXA_ADMIN_PASSWORD_FILE)")
    return 0


# --------------------------------------------------------------------------- ingest


def cmd_ingest(args: argparse.Namespace) -> int:
    """Back-load files and folders. Every file gets one line: ingested, duplicate, quarantined (with
    the reason), held for verification, NOT finished, or unreadable (with why: permission denied,
    gone, an input/output error, not a regular file, a link inside a folder, a path that does not
    exist). An unreadable file cannot be quarantined (there are no bytes to keep): it is reported
    and the run goes on with the others. The exit status is 0 only when every file ended
    ingested, duplicate, quarantined or held; 1 when any is unreadable or not finished (running
    the same command again, once fixed, loads what is missing and counts the rest as duplicates)."""
    from services.backload import Loaded, ingest_paths, list_sources

    ctx = context(dispatch=False)  # back-loading runs its own jobs, whatever the deployment
    listed = list_sources(args.paths)
    files = [one for one in listed if isinstance(one, Path)]
    counts = {"ingested": 0, "duplicate": 0, "quarantined": 0, "held": 0, "unfinished": 0, "unreadable": 0}
    skipped = [one for one in listed if isinstance(one, Loaded)]
    for one in chain(skipped, ingest_paths(ctx, files)):  # each line as its file is finished
        counts[one.outcome] += 1
        print(
            f"{one.path}: {one.outcome}: {one.detail}"
            if one.outcome in ("quarantined", "unreadable")
            else f"{one.path}: {one.outcome} ({one.detail})"
        )
    evaluated = run_queued_evaluations(ctx)
    print(
        f"{len(files) + len(skipped)} files: {counts['ingested']} ingested, {counts['duplicate']} duplicate, "
        f"{counts['quarantined']} quarantined"
        + (f", {counts['held']} held for verification (QA: scans)" if counts["held"] else "")
        + (f", {counts['unfinished']} NOT finished (run again)" if counts["unfinished"] else "")
        + (f", {counts['unreadable']} NOT READ (unreadable: see above)" if counts["unreadable"] else "")
        + f"; {evaluated} patients re-evaluated"
    )
    return 0 if counts["unfinished"] == 0 and counts["unreadable"] == 0 else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from services.evaluation import evaluate_all

    count = evaluate_all(context())
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
        text = export_all(context(), args.format, identifier=args.patient)
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

    ctx = context()
    touched = _import(lambda: import_therapies(ctx, args.file))
    run_queued_evaluations(ctx)
    print(f"therapies imported for {len(touched)} patients; their next scans were recomputed")
    return 0


def cmd_precision_import(args: argparse.Namespace) -> int:
    from services.precision import import_precision

    ctx = context()
    for r in _import(lambda: import_precision(ctx, args.file)):
        f = r.facility
        print(
            f"{r.device.manufacturer} {r.device.model} S/N {r.device.serial} {r.site}: "
            f"RMS-SD {f.rms_sd_g_cm2:.4f} g/cm2, %CV {f.rms_cv_percent:.2f}, "
            f"LSC {f.lsc_g_cm2:.3f} g/cm2 ({f.degrees_of_freedom} df)"
            + "".join(f"\n  warning: {w}" for w in r.warnings)
        )
    run_queued_evaluations(ctx)
    return 0


def cmd_precision_show(args: argparse.Namespace) -> int:
    from db.calibration import latest_studies

    ctx = context()
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

    ctx = context()
    saved = _import(lambda: import_crosscal(ctx, args.file))
    for r in saved.previews:
        print(
            f"{r.kind} {r.device_a.model} S/N {r.device_a.serial} -> {r.device_b.model} S/N {r.device_b.serial} "
            f"{r.site}: slope {r.slope:.4f}, intercept {r.intercept:.4f}, LSC {r.lsc_g_cm2:.3f} g/cm2"
            + (f" ({r.note})" if r.note else "")
        )
    run_queued_evaluations(ctx)
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """Write the demo cohort into the inbox, let the running service ingest it (or ingest it
    here with --now), then import its precision studies, cross-calibration and therapies."""
    import tempfile

    from dxa import demo

    ctx = context()
    made = demo.cohort()
    paths = demo.write_files(ctx.settings.inbox_dir, made.files)
    print(f"{len(paths)} demo files written to {ctx.settings.inbox_dir / demo.DEMO_FOLDER} (all data invented)")
    if args.now:
        from services.backload import ingest_paths

        for one in ingest_paths(ctx, paths):
            print(f"  {one.path.name}: {one.outcome} ({one.detail})")
            one.path.unlink(missing_ok=True)
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
