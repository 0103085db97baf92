"""A PDF holding several reports through `dxa ingest`: every report stored under its own patient,
the file counted once (one line, one source-file row), and a re-drop changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Exam, Measurement, SourceFile
from dxa.cli import main
from tests.unit.ingest.pdf_variants import concat, truth_of

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "samples"
FILES = [
    SAMPLES / "single" / "pdf" / "hologic_spine_report.pdf",
    SAMPLES / "single" / "pdf" / "ge_ap_spine_report.pdf",
    SAMPLES / "patients" / "1713644_late_ge_sr" / "20180410_ge_ap_spine.pdf",
    SAMPLES / "patients" / "1713644_late_ge_sr" / "20200121_ge_ap_spine.pdf",
]


def test_several_reports_in_one_pdf_are_stored_each_under_its_patient(
    tmp_path: Path, local_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.pdf"
    bundle.write_bytes(concat(*(f.read_bytes() for f in FILES)))

    assert main(["ingest", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ingested") == 1 and "4 reports" in out and "1 files: 1 ingested" in out

    assert main(["export", "--format", "json"]) == 0
    patients = {p["patient_id"]: p for p in json.loads(capsys.readouterr().out)}
    truths = [truth_of(f) for f in FILES]
    assert set(patients) == {t["patient_id"] for t in truths}
    for truth in truths:
        exams = {e["date"]: e for e in patients[truth["patient_id"]]["exams"]}
        exam = exams[truth["exam_date"]]
        got = {(m["site"], m["side"]): m["bmd"] for m in exam["measurements"]}
        want = {(m["site"], m["side"]): m["bmd"] for m in truth["measurements"]}
        assert got == pytest.approx(want)
        assert exam["device"]["serial"] == truth["device"]["serial"]
    follow_up = patients[truths[2]["patient_id"]]
    assert len(follow_up["exams"]) == 2 and follow_up["comparisons"], "the follow-up exam and its comparisons"

    assert main(["ingest", str(bundle)]) == 0
    assert ": duplicate" in capsys.readouterr().out

    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{local_data_dir / 'dxa.db'}")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(SourceFile)) == 1
        assert conn.scalar(select(func.count()).select_from(Exam)) == 4
        file_id = conn.scalar(select(SourceFile.id))
        others = select(func.count()).select_from(Measurement).where(Measurement.source_file_id != file_id)
        assert conn.scalar(others) == 0
    engine.dispose()


def test_several_reports_in_one_dicom_file_are_stored_each_under_its_patient(
    tmp_path: Path, local_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two Part 10 files one after the other, and a structured report nesting two patients'
    documents: the same transaction path as a PDF of several reports."""
    from tests.unit.ingest import dicom_multi as m

    (tmp_path / "merged.dcm").write_bytes(m.concatenated(m.HOLOGIC, m.SR_B))
    (tmp_path / "nested.dcm").write_bytes(m.nested_sr(m.SR_C, [m.document(m.SR_A), m.document(m.SR_C)]))
    assert main(["ingest", str(tmp_path / "merged.dcm"), str(tmp_path / "nested.dcm")]) == 0
    out = capsys.readouterr().out
    assert out.count(": ingested") == 2 and out.count("2 reports") == 2, out

    assert main(["export", "--format", "json"]) == 0
    patients = {p["patient_id"]: p for p in json.loads(capsys.readouterr().out)}
    for sample in (m.HOLOGIC, m.SR_B, m.SR_A, m.SR_C):
        truth = truth_of(sample)
        exams = {e["date"]: e for e in patients[truth["patient_id"]]["exams"]}
        got = {(x["site"], x["side"]): x["bmd"] for x in exams[truth["exam_date"]]["measurements"]}
        assert got == pytest.approx({(x["site"], x["side"]): x["bmd"] for x in truth["measurements"]})
    assert len(patients) == 4
