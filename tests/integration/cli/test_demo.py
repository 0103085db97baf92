"""`dxa demo`: the invented cohort goes into the inbox of a running embedded service (its real
watcher and job runner, in threads), which ingests it; the command then loads precision studies,
a phantom cross-calibration and therapies, and every screen has something to show."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.migrate import upgrade
from dxa import demo
from dxa.cli import main
from dxa.embedded import run_jobs_forever, watch_forever
from services.context import build_context
from settings import load_settings


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DXA_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DXA_SCAN_INTERVAL_S", "0.2")
    monkeypatch.setenv("DXA_MIN_FILE_AGE_S", "0")
    monkeypatch.delenv("DXA_DATABASE_URL", raising=False)
    monkeypatch.delenv("DXA_BROKER_URL", raising=False)
    monkeypatch.delenv("DXA_INBOX", raising=False)
    ctx = build_context(load_settings())
    upgrade(ctx.engine)
    stop = threading.Event()
    threads = [
        threading.Thread(target=watch_forever, args=(ctx, stop), daemon=True),
        threading.Thread(target=run_jobs_forever, args=(ctx, stop), kwargs={"refresh_daily": False}, daemon=True),
    ]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join(timeout=30)


def test_demo_into_a_running_service(service: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--wait", "120"]) == 0
    out = capsys.readouterr().out
    assert "DEMO-scanner-notes.txt: quarantined" in out and "demo ready" in out
    assert main(["export", "--format", "json"]) == 0
    patients = {p["patient_id"]: p for p in json.loads(capsys.readouterr().out)}
    assert set(patients) == {"DEMO-0001", "DEMO-0002", "DEMO-0003", "DEMO-0004"}
    assert "DEMO-0004_2020-03-20_zh.pdf: ingested" in out  # the Chinese PRIMUS report
    statuses = {pid: {c["status"] for c in p["comparisons"]} for pid, p in patients.items()}
    assert "rejected_cross_machine" in statuses["DEMO-0001"]  # machine replaced: refused, new baseline
    assert "ok_cross_calibrated" in statuses["DEMO-0002"]  # one model, phantom study
    assert {"left", "right", "mean"} <= {c["side"] for c in patients["DEMO-0002"]["comparisons"]}
    codes = {pid: [a["code"] for a in p["next_scan"]["alerts"]] for pid, p in patients.items()}
    assert "denosumab_stopped" in codes["DEMO-0003"] and "loss_on_treatment" in codes["DEMO-0002"]


def test_without_a_running_service_it_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DXA_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("DXA_DATABASE_URL", raising=False)
    monkeypatch.delenv("DXA_INBOX", raising=False)
    assert main(["demo", "--wait", "0"]) == 2  # a UserError: nothing ingested them
    written = sorted(p.name for p in (tmp_path / "var" / "inbox" / demo.DEMO_FOLDER).iterdir())
    assert written and all(name.startswith("DEMO") for name in written)  # marked as demo data
    assert any("演示".encode() in p.read_bytes() for p in (tmp_path / "var" / "inbox" / demo.DEMO_FOLDER).iterdir())
