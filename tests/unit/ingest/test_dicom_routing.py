"""DICOM as routers leave it: every accepted shared DICOM sample, re-encoded or stripped on the way,
gives the same parsed results; a Hologic block whose creator was stripped is found by content; a
block that is truly gone is refused with that reason."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from ingest.errors import NotDicom, NotDxaResult, ParseError, PatientMismatch
from ingest.parse import ParseLimits, parse_file
from tests.conftest import skip_or_fail
from tests.unit.ingest.dicom_reencode import REENCODINGS
from tests.unit.ingest.pdf_variants import truth_of
from tests.unit.ingest.test_shared_samples import SAMPLES, TRUTH_SUFFIX, compare

DICOMS = sorted(
    Path(str(t)[: -len(TRUTH_SUFFIX)])
    for t in (SAMPLES.rglob("*.dcm" + TRUTH_SUFFIX) if SAMPLES.is_dir() else [])
    if truth_of(Path(str(t)[: -len(TRUTH_SUFFIX)]))["expect"] == "accept"
)
HOLOGIC = SAMPLES / "patients" / "4555466_same_machine_gain_loss" / "20130416_SP_DICOM.dcm"


@pytest.mark.parametrize("encoding", sorted(REENCODINGS))
def test_a_re_encoded_instance_gives_the_same_results(encoding: str) -> None:
    if not DICOMS:
        skip_or_fail("../shared/samples not present")
    problems = []
    for sample in DICOMS:
        original = parse_file(sample.read_bytes(), sample.name, ParseLimits())
        try:
            again = parse_file(REENCODINGS[encoding](sample.read_bytes()), sample.name, ParseLimits())
        except ParseError as exc:
            problems.append(f"{sample.name}: {exc.code} {exc.message}")
            continue
        problems += [f"{sample.name}: {p}" for p in compare(again, truth_of(sample))]
        if (again.measurements, again.patient, again.sop_instance_uid) != (
            original.measurements,
            original.patient,
            original.sop_instance_uid,
        ):
            problems.append(f"{sample.name}: results differ from the original encoding")
    assert problems == []


def test_a_hologic_block_that_is_truly_gone_is_refused_with_that_reason() -> None:
    if not HOLOGIC.is_file():
        skip_or_fail("../shared/samples not present")
    ds = pydicom.dcmread(HOLOGIC)
    for tag in (0x00191000, 0x00190010):
        del ds[tag]
    out = io.BytesIO()
    ds.save_as(out)
    with pytest.raises(NotDxaResult) as info:
        parse_file(out.getvalue(), "x.dcm", ParseLimits())
    assert "no private results data" in info.value.message


def test_a_raw_dataset_must_prove_it_is_a_dicom_instance() -> None:
    fake = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + b"\x00" * 64
    with pytest.raises(ParseError) as info:
        parse_file(fake, "x.dcm", ParseLimits())
    assert isinstance(info.value, NotDicom) or info.value.code == "unreadable"


def test_a_hologic_header_naming_another_patient_than_its_results_is_refused() -> None:
    if not HOLOGIC.is_file():
        skip_or_fail("../shared/samples not present")
    ds = pydicom.dcmread(HOLOGIC)
    ds.PatientID = "ZZ0000001"
    out = io.BytesIO()
    ds.save_as(out)
    with pytest.raises(PatientMismatch) as info:
        parse_file(out.getvalue(), "x.dcm", ParseLimits())
    assert "ZZ0000001" not in info.value.message
