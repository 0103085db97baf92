"""Several reports in one DICOM file: each becomes its own report with the patient, date and
machine of its own header, records or observation context, or the file is refused with a typed
reason; never a value under another report's patient, never a report silently dropped."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import MissingField, NotDxaResult, ParseError, PatientMismatch, UnreadableFile
from ingest.parse import ParseLimits, parse_file_reports
from tests.conftest import skip_or_fail
from tests.unit.ingest import dicom_multi as m
from tests.unit.ingest.test_shared_samples import SAMPLES, TRUTH_SUFFIX, compare

LIMITS = ParseLimits()


@pytest.fixture(autouse=True)
def _samples() -> None:
    if not SAMPLES.is_dir():
        skip_or_fail("../shared/samples not present")


def _truth(sample: Path) -> dict[str, Any]:
    return dict(json.loads(Path(str(sample) + TRUTH_SUFFIX).read_text(encoding="utf-8")))


def _check(data: bytes, samples: list[Path]) -> None:
    reports = parse_file_reports(data, "multi.dcm", LIMITS)
    assert len(reports) == len(samples), [r.patient.patient_id for r in reports]
    for report, sample in zip(reports, samples, strict=True):
        truth = _truth(sample)
        assert compare(report, truth) == [], sample.name
        if truth.get("birth_date"):
            assert str(report.patient.birth_date) == truth["birth_date"], sample.name
        if truth.get("patient_name"):  # the whole name, as its own record or context gives it
            assert report.patient.name == truth["patient_name"], sample.name


@pytest.mark.parametrize(
    "samples",
    [
        [m.SR_A, m.SR_B],
        [m.HOLOGIC, m.SR_A],
        [m.SR_A, m.HOLOGIC],
        [m.HOLOGIC, m.EPDF, m.SR_C],
        [m.SR_B, m.SR_B],  # the same report twice: two copies of one exam, never one lost
    ],
    ids=lambda s: "+".join(p.stem for p in s),
)
def test_part10_files_one_after_the_other_are_read_each_with_its_own_header(samples: list[Path]) -> None:
    _check(m.concatenated(*samples), samples)


def test_a_second_file_cut_short_refuses_the_whole_file() -> None:
    data = m.SR_A.read_bytes() + m.SR_B.read_bytes()[:-200]
    with pytest.raises(UnreadableFile):
        parse_file_reports(data, "multi.dcm", LIMITS)


def test_nested_documents_of_two_patients_become_two_reports() -> None:
    _check(m.nested_sr(m.SR_A, [m.document(m.SR_A), m.document(m.SR_B)]), [m.SR_A, m.SR_B])
    _check(m.nested_sr(m.SR_C, [m.document(m.SR_B), m.document(m.SR_A)]), [m.SR_B, m.SR_A])


def test_the_headers_own_regions_and_a_nested_document_of_another_patient() -> None:
    _check(m.nested_sr(m.SR_A, [m.document(m.SR_B)], top_level_of_header=True), [m.SR_A, m.SR_B])


def test_nested_documents_without_context_belong_to_the_header_patient() -> None:
    data = m.nested_sr(m.SR_A, [m.document(m.SR_A, subject=False), m.document(m.SR_A, subject=False)])
    reports = parse_file_reports(data, "multi.dcm", LIMITS)
    assert [r.patient.patient_id for r in reports] == [_truth(m.SR_A)["patient_id"]] * 2


@pytest.mark.parametrize(
    ("documents", "reason"),
    [
        # another patient's document, and one that names nobody: which patient is it?
        (lambda: [m.document(m.SR_B), m.document(m.SR_C, subject=False)], "cannot be tied"),
        # another patient's document without a date of its own: the header's date is not its date
        (lambda: [m.document(m.SR_A), m.document(m.SR_B, dated=False)], "no exam date"),
        # one document alone naming another patient than the header: header and body disagree
        (lambda: [m.document(m.SR_B)], "another patient"),
    ],
    ids=["unnamed", "undated", "header-disagrees"],
)
def test_documents_that_cannot_be_tied_refuse_the_file(documents: Any, reason: str) -> None:
    with pytest.raises(PatientMismatch) as info:
        parse_file_reports(m.nested_sr(m.SR_A, documents()), "multi.dcm", LIMITS)
    assert reason in info.value.message
    for sample in (m.SR_A, m.SR_B, m.SR_C):  # no identifier in the reason
        assert _truth(sample)["patient_id"] not in info.value.message


def test_a_nested_document_naming_its_machine_takes_nothing_of_the_headers_machine() -> None:
    data = m.nested_sr(m.SR_A, [m.document(m.SR_A), m.document(m.SR_B)])
    reports = parse_file_reports(data, "multi.dcm", LIMITS)
    assert reports[1].device.serial == _truth(m.SR_B)["device"]["serial"]  # None, not SR_A's serial
    assert reports[1].accession != reports[0].accession or reports[1].accession is None


@pytest.mark.parametrize(
    "samples",
    [[m.SR_A, m.SR_B], [m.HOLOGIC, m.SR_C], [m.EPDF, m.SR_A, m.HOLOGIC]],
    ids=lambda s: "+".join(p.stem for p in s),
)
def test_a_directory_whose_records_carry_the_instances_gives_each_its_record_identity(samples: list[Path]) -> None:
    _check(m.directory(samples), samples)


def test_a_directory_written_level_by_level_is_read_by_its_offsets() -> None:
    """Every PATIENT record first, then every STUDY…: read in record order, the first patient's
    study would hang under the last patient; the offsets say where each belongs."""
    _check(m.directory([m.SR_A, m.SR_B, m.HOLOGIC], by_level=True), [m.SR_A, m.SR_B, m.HOLOGIC])


def test_a_directory_written_level_by_level_without_offsets_is_refused() -> None:
    data = m.without_offsets(m.directory([m.SR_A, m.SR_B], by_level=True))
    with pytest.raises(PatientMismatch):
        parse_file_reports(data, "dir.dcm", LIMITS)
    # written depth first, the same records need no offsets
    _check(m.without_offsets(m.directory([m.SR_A, m.SR_B])), [m.SR_A, m.SR_B])


def test_a_directory_record_without_a_patient_record_is_refused() -> None:
    with pytest.raises(MissingField) as info:
        parse_file_reports(m.directory([m.SR_A, m.SR_B], with_patients=False), "dir.dcm", LIMITS)
    assert "patient ID" in info.value.message


def test_a_directory_that_only_lists_files_is_not_a_result() -> None:
    with pytest.raises(NotDxaResult) as info:
        parse_file_reports(m.directory([m.SR_A, m.HOLOGIC], content=False), "DICOMDIR", LIMITS)
    assert "DICOMDIR" in info.value.message


def test_every_multi_report_variant_is_right_or_refused() -> None:
    """The variants table: zero reports under a wrong patient, zero reports dropped."""
    variants: list[tuple[bytes, list[Path]]] = [
        (m.concatenated(m.SR_C, m.SR_A), [m.SR_C, m.SR_A]),
        (m.nested_sr(m.SR_B, [m.document(m.SR_B, device=False), m.document(m.SR_C)]), [m.SR_B, m.SR_C]),
        (m.directory([m.SR_C, m.EPDF]), [m.SR_C, m.EPDF]),
    ]
    for data, samples in variants:
        try:
            reports = parse_file_reports(data, "multi.dcm", LIMITS)
        except ParseError:
            continue
        assert len(reports) == len(samples)
        for report, sample in zip(reports, samples, strict=True):
            assert report.patient.patient_id == _truth(sample)["patient_id"]


def test_two_hologic_results_blocks_in_one_object_give_two_reports() -> None:
    """A router merging two scans of one visit keeps both blocks; a block of other data is passed over."""
    from pydicom import dcmread

    from tests.unit.ingest import dicom_builders as b

    spine = b.hologic_blob(b.SPINE_ROWS)
    hip = b.hologic_blob(
        [["Neck", "4.71", "3.58", "0.760", "-0.8", "0.7"], ["Total", "33.66", "30.55", "0.908", "-0.3", "1.3"]],
        scan_mode="f Left Hip",
        protocol="Left Hip",
    )
    ds = dcmread(io.BytesIO(b.hologic_file(spine)))
    ds.add_new((0x0019, 0x0011), "LO", "HOLOGIC")
    ds.add_new((0x0019, 0x1100), "UN", hip.encode())
    ds.add_new((0x0019, 0x0012), "LO", "HOLOGIC")
    ds.add_new((0x0019, 0x1200), "UN", b"calibration parameters, not results")
    reports = parse_file_reports(b.to_bytes(ds), "h.dcm", LIMITS)
    assert [r.scan_type for r in reports] == ["spine", "hip"]
    assert {m.site for m in reports[1].measurements} == {"femoral_neck", "total_hip"}
    assert all(r.patient.patient_id == "P123" for r in reports)


def test_looking_for_carried_instances_leaves_the_sr_content_tree_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    """The content tree is split from its raw bytes (`ingest.dicom.rawsr`); converting it through
    pydicom first, to look for carried instances, made an SR parse ten times slower."""
    import ingest.dicom.ge_sr as ge_sr

    def converted(item: Any) -> Any:
        raise AssertionError("the content tree went through pydicom's objects")

    monkeypatch.setattr(ge_sr, "node_from_dataset", converted)
    assert parse_file_reports(m.SR_A.read_bytes(), "sr.dcm", LIMITS)
