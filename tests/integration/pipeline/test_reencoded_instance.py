"""The same DICOM instance re-sent by a router after re-encoding it is a `duplicate` (kept in the
archive, counted once, no second exam); the same UID with other results is still a UID conflict
for QA. Through `dxa ingest`, on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from db.models import Exam, Measurement, SourceFile
from dxa.cli import main
from tests.integration.pipeline.support import rewrite_dicom, same_uid_other_bytes
from tests.unit.ingest.dicom_reencode import REENCODINGS

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "samples"
ORIGINALS = [
    SAMPLES / "patients" / "4555466_same_machine_gain_loss" / "20130416_SP_DICOM.dcm",  # Hologic image
    SAMPLES / "patients" / "QH6580177_same_model_different_serial" / "20150218_STR00001.dcm",  # GE SR
]


def test_re_encoded_copies_are_duplicates_and_other_results_a_conflict(
    tmp_path: Path, local_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copies = tmp_path / "routed"
    copies.mkdir()
    routed = 0
    for original in ORIGINALS:
        for name, encode in REENCODINGS.items():
            data = encode(original.read_bytes())
            if data != original.read_bytes():  # a GE SR has no private elements to drop
                (copies / f"{original.stem}_{name}.dcm").write_bytes(data)
                routed += 1
        (copies / f"{original.stem}_conflict.dcm").write_bytes(
            rewrite_dicom(original.read_bytes(), same_uid_other_bytes)
        )

    assert main(["ingest", *map(str, ORIGINALS)]) == 0
    capsys.readouterr()
    assert main(["ingest", str(copies)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line in lines[:-1]:
        if "_conflict.dcm" in line:
            assert ": quarantined: uid_conflict" in line, line
        else:
            assert ": duplicate (the same DICOM instance" in line, line
    assert routed >= 14 and f"{routed + 2} files: 0 ingested, {routed} duplicate, 2 quarantined" in lines[-1]

    engine = create_engine(f"sqlite:///{local_data_dir / 'dxa.db'}")
    try:
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Exam)) == 2
            owners = set(conn.scalars(select(Measurement.source_file_id)))
            statuses = dict(conn.execute(select(SourceFile.status, func.count()).group_by(SourceFile.status)).all())
    finally:
        engine.dispose()
    assert len(owners) == 2  # every value still comes from the two originals
    assert statuses == {"ingested": 2, "duplicate": routed, "quarantined": 2}
    archived = [p for p in (local_data_dir / "archive").rglob("*") if p.is_file()]
    assert len(archived) == 2 + routed  # nothing lost: the copies are kept too
