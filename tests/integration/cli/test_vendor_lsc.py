"""The machine's printed LSC through `dxa ingest` and `dxa export`: with no precision study loaded,
every comparison whose machine printed an LSC uses it (`lsc_source` "vendor", the file named),
and its verdict is the one the scenario truth gives at the printed LSC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dxa.cli import main

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "samples"


def test_comparisons_follow_the_lsc_the_machine_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not SAMPLES.is_dir():
        pytest.fail("../shared/samples is missing")
    monkeypatch.setenv("DXA_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("DXA_DATABASE_URL", raising=False)
    monkeypatch.delenv("DXA_BROKER_URL", raising=False)
    # single/ holds other patients' reports from the same machines: a machine's printed LSC is its own
    assert main(["ingest", str(SAMPLES / "patients"), str(SAMPLES / "single")]) == 0
    capsys.readouterr()
    assert main(["export", "--format", "json"]) == 0
    patients = {p["patient_id"]: p for p in json.loads(capsys.readouterr().out)}

    vendor, followed, checked = 0, 0, 0
    for scenario_file in sorted((SAMPLES / "patients").glob("*/scenario.truth.json")):
        scenario = json.loads(scenario_file.read_text(encoding="utf-8"))
        patient = patients[scenario["patient_id"]]
        dates = {e["exam_id"]: e["date"] for e in patient["exams"]}
        ours = {
            (c["site"], c["side"], dates[c["from_exam"]], dates[c["to_exam"]], c["reference"]): c
            for c in patient["comparisons"]
        }
        for want in scenario["comparisons"]:
            if want.get("significance_at_printed_lsc") is None:
                continue
            checked += 1
            c = ours[(want["site"], want["side"], want["from_exam"], want["to_exam"], want["reference"])]
            if c["lsc_source"] != "vendor":
                continue
            vendor += 1
            assert c["lsc_g_cm2"] == pytest.approx(want["printed_lsc_g_cm2"]), c
            assert "as the machine printed it (file " in c["reason"]
            if c["significance"] is not None:  # None: dissimilar scans, never a verdict
                assert c["significance"] == want["significance_at_printed_lsc"], (want, c)
                followed += 1
    assert checked >= 90 and vendor >= 45 and followed >= 45, (checked, vendor, followed)

    drug_holiday = patients["4555466"]
    dates = {e["exam_id"]: e["date"] for e in drug_holiday["exams"]}
    spine = next(
        c
        for c in drug_holiday["comparisons"]
        if c["site"] == "L1-L4" and c["reference"] == "previous" and dates[c["to_exam"]] == "2022-06-07"
    )
    assert (spine["percent_change"], spine["lsc_source"], spine["significance"]) == (-4.41, "vendor", "loss")
