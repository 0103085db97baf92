"""The `dxa` command as an operator runs it, on a fresh SQLite data folder: ingest, imports
(therapies, precision, cross-calibration) and exports, including the refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dxa.cli import main

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "samples"
GAIN_LOSS = SAMPLES / "patients" / "4555466_same_machine_gain_loss"
HOLOGIC_VS_GE = SAMPLES / "patients" / "5785022_hologic_vs_ge"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not SAMPLES.is_dir():
        pytest.fail("../shared/samples is missing")
    monkeypatch.setenv("DXA_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("DXA_DATABASE_URL", raising=False)
    monkeypatch.delenv("DXA_BROKER_URL", raising=False)
    return tmp_path / "var"


def export(capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict]:
    capsys.readouterr()
    assert main(["export", "--format", "json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_ingest_prints_a_line_per_file_and_redrop_is_duplicate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(GAIN_LOSS)]) == 0
    out = capsys.readouterr().out
    dcm = sorted(GAIN_LOSS.glob("*.dcm"))
    for path in dcm:
        assert f"{path}: ingested" in out
    assert str(GAIN_LOSS / "therapies.csv") + ": quarantined: unrecognised_format" in out
    assert main(["ingest", str(dcm[0])]) == 0
    assert f"{dcm[0]}: duplicate" in capsys.readouterr().out
    patients = export(capsys, "--patient", "4555466")
    assert len(patients) == 1 and len(patients[0]["exams"]) == 5


def test_therapy_import_with_an_unknown_agent_names_the_line_and_imports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["ingest", str(GAIN_LOSS)])
    bad = write_csv(
        tmp_path / "t.csv",
        ["patient_id", "agent", "start_date", "stop_date"],
        [["4555466", "alendronate", "2013-05-01", "2018-05-01"], ["4555466", "unobtainium", "2019-01-01", ""]],
    )
    capsys.readouterr()
    assert main(["therapies", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "agent" in err and "unobtainium" in err and "nothing was imported" in err
    before = export(capsys, "--patient", "4555466")[0]["next_scan"]
    assert before["rule_id"] is not None and "oral_bisphosphonate" not in (before["rule_id"] or "")

    good = write_csv(
        tmp_path / "t2.csv",
        ["patient_id", "agent", "start_date", "stop_date"],
        [["4555466", "阿仑膦酸钠", "2013-05-01", "2018-05-01"]],
    )
    assert main(["therapies", "import", str(good)]) == 0
    after = export(capsys, "--patient", "4555466")[0]["next_scan"]
    assert after != before
    assert after["rule_id"] == "drug_holiday"


def precision_rows(serial: str, site: str, base: float) -> list[list[object]]:
    """30 patients x 2 scans, each pair 0.010 apart: RMS-SD = 0.01/sqrt(2), LSC = 0.0196 g/cm²."""
    return [[serial, site, "tech A" if i % 2 else "tech B", f"P{i:02d}", base + i * 0.003, base + i * 0.003 + 0.010]
            for i in range(30)]  # fmt: skip


def test_precision_study_gives_the_study_lsc_to_comparisons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["ingest", str(GAIN_LOSS)])
    study = write_csv(
        tmp_path / "p.csv",
        ["device_serial", "site", "technologist", "patient", "bmd_1", "bmd_2"],
        precision_rows("301234M", "L1-L4", 0.8),
    )
    capsys.readouterr()
    assert main(["precision", "import", str(study)]) == 0
    out = capsys.readouterr().out
    assert "Horizon Ci S/N 301234M L1-L4" in out and "LSC 0.020 g/cm2" in out and "(30 df)" in out
    comparisons = export(capsys, "--patient", "4555466")[0]["comparisons"]
    spine = [c for c in comparisons if c["site"] == "L1-L4"]
    hip = [c for c in comparisons if c["site"] == "total_hip"]
    assert spine
    assert all(c["lsc_source"] == "study" and c["lsc_g_cm2"] == pytest.approx(0.0196, abs=5e-4) for c in spine)
    # no study for the hip: the LSC the machine printed on its hip reports (issue 10)
    assert hip and all(c["lsc_source"] == "vendor" and c["lsc_g_cm2"] == pytest.approx(0.027) for c in hip)
    assert main(["precision", "show"]) == 0
    assert "RMS-SD 0.0071 g/cm2" in capsys.readouterr().out


def test_precision_study_too_small_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["ingest", str(GAIN_LOSS)])
    small = write_csv(
        tmp_path / "p.csv",
        ["device_serial", "site", "technologist", "patient", "bmd_1", "bmd_2"],
        precision_rows("301234M", "L1-L4", 0.8)[:10],
    )
    capsys.readouterr()
    assert main(["precision", "import", str(small)]) == 2
    assert "degrees of freedom" in capsys.readouterr().err
    assert main(["precision", "show"]) == 0
    assert "no precision study yet" in capsys.readouterr().out


def test_unknown_device_serial_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = write_csv(
        tmp_path / "p.csv",
        ["device_serial", "site", "technologist", "patient", "bmd_1", "bmd_2"],
        precision_rows("NOPE1", "L1-L4", 0.8),
    )
    assert main(["precision", "import", str(study)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "device_serial" in err and "NOPE1" in err


def test_in_vivo_cross_calibration_makes_a_machine_change_comparable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", str(HOLOGIC_VS_GE)]) == 0
    refused = [c for c in export(capsys, "--patient", "5785022")[0]["comparisons"] if c["site"] == "L1-L4"]
    assert {c["status"] for c in refused} == {"rejected_cross_machine", "ok"}
    study = write_csv(
        tmp_path / "p.csv",
        ["device_serial", "site", "technologist", "patient", "bmd_1", "bmd_2"],
        precision_rows("DF+500475", "L1-L4", 0.9) + precision_rows("301234M", "L1-L4", 0.8),
    )
    assert main(["precision", "import", str(study)]) == 0
    # 30 patients on both: Hologic reads about 0.1 g/cm² lower than the Lunar at the spine.
    pairs = [
        ["in_vivo", "DF+500475", "301234M", "L1-L4", f"S{i}", 0.80 + 0.01 * i, 0.70 + 0.01 * i + 0.004 * (-1) ** i]
        for i in range(30)
    ]
    cal = write_csv(
        tmp_path / "c.csv", ["kind", "device_a_serial", "device_b_serial", "site", "subject", "bmd_a", "bmd_b"], pairs
    )
    capsys.readouterr()
    assert main(["crosscal", "import", str(cal)]) == 0
    assert "in_vivo" in capsys.readouterr().out
    comparisons = [c for c in export(capsys, "--patient", "5785022")[0]["comparisons"] if c["site"] == "L1-L4"]
    calibrated = [c for c in comparisons if c["status"] == "ok_cross_calibrated"]
    assert calibrated, comparisons
    assert all(c["lsc_source"] == "crosscal" and c["percent_change"] is not None for c in calibrated)
    # the hips were not calibrated: still refused
    hips = [c for c in export(capsys, "--patient", "5785022")[0]["comparisons"] if c["site"] == "total_hip"]
    assert any(c["status"] == "rejected_cross_machine" for c in hips)


def test_csv_and_fhir_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["ingest", str(GAIN_LOSS)])
    out = tmp_path / "c.csv"
    assert main(["export", "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows and {r["status"] for r in rows} == {"ok"}
    negative = [r for r in rows if r["percent_change"].startswith("-")]
    assert negative and all(float(r["percent_change"]) < 0 for r in negative)  # numbers stay numbers
    capsys.readouterr()
    assert main(["export", "--format", "fhir", "--patient", "4555466"]) == 0
    bundle = json.loads(capsys.readouterr().out)
    assert bundle["resourceType"] == "Bundle"
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"DiagnosticReport", "Observation", "Device"} <= kinds
