"""`dxa users`: dashboard accounts, each change audited (`services.users`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from dxa.cli_support import UserError, context


def _read_password(path: Path | None, stream: TextIO) -> str:
    text = path.read_text(encoding="utf-8") if path else stream.readline()
    return text.strip("\r\n")


def _account_change(fn: Any) -> None:
    """Run one `services.users` change in one transaction; a refusal is the operator's to fix."""
    from services.users import AccountError

    ctx = context()
    try:
        with ctx.sessions.begin() as session:
            fn(session)
    except AccountError as exc:
        raise UserError(str(exc)) from None


def cmd_users_list(args: argparse.Namespace) -> int:
    from services.users import accounts

    ctx = context()
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

    ctx = context()
    with ctx.sessions.begin() as session:
        user = get_user(session, args.username)
        if user is None:
            raise UserError(f"no user {args.username!r}")
        _, secret = create_api_token(session, user, "cli")
    print(secret)
    return 0
