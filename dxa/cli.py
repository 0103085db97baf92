"""The `dxa` command (docs/architecture.md, "Exports"). Parsing of arguments only: each command is a thin call
into `dxa.commands`, `dxa.account_commands` or `dxa.process_commands`, imported only once a
command is chosen, so that `dxa --help` stays fast."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dxa", description="DXA monitor: follow bone density over years.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="create or upgrade the database schema")

    serve = sub.add_parser("serve", help="embedded all-in-one: watcher, job runner and web app (SQLite)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)

    web = sub.add_parser("web", help="the dashboard and API only")
    web.add_argument("--host", default=None)
    web.add_argument("--port", type=int, default=None)

    worker = sub.add_parser("worker", help="a Celery worker (needs DXA_BROKER_URL)")
    worker.add_argument("--concurrency", type=int, default=2)
    sub.add_parser("beat", help="the Celery beat scheduler (daily schedule refresh, job sweeper)")
    sub.add_parser("watch", help="watch DXA_INBOX and hand claimed files to the workers")
    sub.add_parser("storescp", help="DICOM Storage SCP writing received objects into the intake")

    ingest = sub.add_parser("ingest", help="ingest files or folders synchronously (back-loading)")
    ingest.add_argument("paths", nargs="+", type=Path)

    export = sub.add_parser("export", help="export patients, exams, comparisons and next scan")
    export.add_argument("--format", choices=("json", "csv", "fhir"), default="json")
    export.add_argument("--patient", default=None, help="one patient identifier")
    export.add_argument("--out", type=Path, default=None, help="write to this file instead of stdout")

    therapies = sub.add_parser("therapies", help="drug history").add_subparsers(dest="action", required=True)
    t_import = therapies.add_parser("import", help="import patient_id,agent,start_date,stop_date rows")
    t_import.add_argument("file", type=Path)

    precision = sub.add_parser("precision", help="precision studies").add_subparsers(dest="action", required=True)
    p_import = precision.add_parser("import", help="import a precision study CSV")
    p_import.add_argument("file", type=Path)
    precision.add_parser("show", help="each machine's precision and LSC per site")

    crosscal = sub.add_parser("crosscal", help="cross-calibrations").add_subparsers(dest="action", required=True)
    c_import = crosscal.add_parser("import", help="import a cross-calibration CSV")
    c_import.add_argument("file", type=Path)

    users = sub.add_parser("users", help="dashboard accounts (every change is audited)").add_subparsers(
        dest="action", required=True
    )
    users.add_parser("list", help="every account with its role and state")
    u_add = users.add_parser("add", help="add a user (password read from stdin or --password-file)")
    u_add.add_argument("username")
    u_add.add_argument("--role", choices=("clinician", "qa", "admin"), required=True)
    u_add.add_argument("--password-file", type=Path, default=None)
    u_passwd = users.add_parser("passwd", help="set a user's password (read from stdin or --password-file)")
    u_passwd.add_argument("username")
    u_passwd.add_argument("--password-file", type=Path, default=None)
    u_disable = users.add_parser("disable", help="refuse the user's sign-in and API tokens (kept for the audit)")
    u_disable.add_argument("username")
    u_enable = users.add_parser("enable", help="allow a disabled user again")
    u_enable.add_argument("username")
    u_remove = users.add_parser("remove", help="delete an account and its API tokens")
    u_remove.add_argument("username")
    u_token = users.add_parser("token", help="issue an API token for a user (printed once)")
    u_token.add_argument("username")

    status = sub.add_parser("status", help="queue, jobs by state, stuck jobs, files per hour, quarantine")
    status.add_argument("--json", action="store_true", help="the same as JSON (what /api/qa/operations gives)")

    health = sub.add_parser("health", help="exit 0 when the named process answers (compose health checks)")
    health.add_argument("service", choices=("web", "worker", "beat", "watch", "storescp"))

    sub.add_parser("evaluate", help="re-evaluate every patient (comparisons, next scan)")

    demo = sub.add_parser("demo", help="write an invented demo cohort into the inbox of the running service")
    demo.add_argument("--wait", type=float, default=180.0, help="seconds to wait for the service (180)")
    demo.add_argument("--now", action="store_true", help="ingest here instead of waiting for a running service")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dxa import account_commands, commands, process_commands
    from dxa.cli_support import UserError

    name = "cmd_" + "_".join(filter(None, [args.command, getattr(args, "action", None)]))
    module = next(m for m in (commands, account_commands, process_commands) if hasattr(m, name))
    handler = getattr(module, name)
    try:
        result: int = handler(args)
    except UserError as exc:
        print(f"dxa: error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
