"""`dxa users` as an operator runs it on a fresh SQLite data folder, and the first administrator
of a deployment from DXA_ADMIN_USER + DXA_ADMIN_PASSWORD_FILE (never a default password)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select

from db.accounts import verify_user
from db.models import AuditEvent
from dxa.cli import main
from dxa.cli_support import context as _context
from dxa.embedded import ensure_demo_user
from services.users import ensure_first_admin
from settings import load_settings


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DXA_DATA_DIR", str(tmp_path / "var"))
    for name in ("DXA_DATABASE_URL", "DXA_BROKER_URL", "DXA_ADMIN_USER", "DXA_ADMIN_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "var"


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out = capsys.readouterr()
    return f"{code}|{out.out}{out.err}"


def signs_in(username: str, password: str) -> bool:
    ctx = _context()
    with ctx.sessions.begin() as session:
        return verify_user(session, username, password) is not None


def test_add_list_passwd_disable_remove_each_audited(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, capsys, "users", "add", "ann", "--role", "admin", stdin="first-pass-1\n").startswith("0|")
    assert run(monkeypatch, capsys, "users", "add", "bob", "--role", "qa", stdin="bob-pass-123\n").startswith("0|")
    listing = run(monkeypatch, capsys, "users", "list")
    assert "ann\tadmin\tactive" in listing and "bob\tqa\tactive" in listing

    assert run(monkeypatch, capsys, "users", "passwd", "bob", stdin="short\n").startswith("2|")
    assert run(monkeypatch, capsys, "users", "passwd", "bob", stdin="new-bob-pass-9\n").startswith("0|")
    assert signs_in("bob", "new-bob-pass-9") and not signs_in("bob", "bob-pass-123")

    assert run(monkeypatch, capsys, "users", "disable", "bob").startswith("0|")
    assert "bob\tqa\tdisabled" in run(monkeypatch, capsys, "users", "list")
    assert not signs_in("bob", "new-bob-pass-9")
    assert run(monkeypatch, capsys, "users", "enable", "bob").startswith("0|")
    assert signs_in("bob", "new-bob-pass-9")

    refused = run(monkeypatch, capsys, "users", "remove", "ann")
    assert refused.startswith("2|") and "last active administrator" in refused
    assert run(monkeypatch, capsys, "users", "remove", "bob").startswith("0|")
    assert "bob" not in run(monkeypatch, capsys, "users", "list")
    assert run(monkeypatch, capsys, "users", "remove", "bob").startswith("2|")

    ctx = _context()
    with ctx.sessions() as session:
        actions = [
            (e.action, e.detail.get("username")) for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]
    assert actions == [
        ("user_added", "ann"),
        ("user_added", "bob"),
        ("user_password_changed", "bob"),
        ("user_disabled", "bob"),
        ("user_enabled", "bob"),
        ("user_removed", "bob"),
    ]


def test_first_admin_comes_from_the_secret_and_only_on_an_empty_user_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context()
    assert ensure_first_admin(ctx.sessions, load_settings()) is None  # nothing configured: no account at all
    assert run_list(ctx) == []

    secret = tmp_path / "admin_password"
    secret.write_text("s3cret-from-file\n", encoding="utf-8")
    monkeypatch.setenv("DXA_ADMIN_USER", "chief")
    monkeypatch.setenv("DXA_ADMIN_PASSWORD_FILE", str(secret))
    settings = load_settings()
    assert ensure_first_admin(ctx.sessions, settings) == "chief"
    assert signs_in("chief", "s3cret-from-file")
    assert ensure_first_admin(ctx.sessions, settings) is None  # second start: nothing changes
    assert ensure_demo_user(ctx.sessions, settings) is None  # an admin is configured: no demo account
    assert run_list(ctx) == ["chief"]


def test_demo_account_password_can_be_changed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = _context()
    password = ensure_demo_user(ctx.sessions, load_settings())
    assert password and signs_in("demo", password)
    assert run(monkeypatch, capsys, "users", "passwd", "demo", stdin="a-better-one-42\n").startswith("0|")
    assert signs_in("demo", "a-better-one-42") and not signs_in("demo", password)


def run_list(ctx: object) -> list[str]:
    from db.accounts import list_users

    with ctx.sessions() as session:  # type: ignore[attr-defined]
        return [u.username for u in list_users(session)]
