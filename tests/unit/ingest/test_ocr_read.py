"""OCR really running (Tesseract, `make system-deps`) on two pages made from the shared samples: a
skewed English scan and a Chinese PRIMUS report sent as a 1-bit fax
(the web test `tests/web/test_scans.py` reads an image-only PDF whose patient ID was folded over,
and a phone photo). The full matrix of resolutions and distortions, with the
accuracy table, is `bench/ocr.py`."""

from __future__ import annotations

import os
import shutil

import pytest

from ingest.ocr.read import ScanReading, read_scan
from tests import scans as S

HOLOGIC = S.SAMPLES / "single" / "pdf" / "hologic_spine_report.pdf"
PRIMUS = S.SAMPLES / "single" / "pdf" / "primus_report_zh.pdf"
GE = S.SAMPLES / "single" / "pdf" / "ge_ap_spine_report.pdf"

if shutil.which("tesseract") is None or not S.SAMPLES.is_dir():
    if os.environ.get("DXA_REQUIRE_SERVICES") == "1":
        raise RuntimeError("tesseract (make system-deps) and ../shared/samples are required for the OCR tests")
    pytest.skip("tesseract or the shared samples are missing", allow_module_level=True)


def _only(reading: ScanReading) -> dict[str, tuple[str, bool]]:
    assert len(reading.reports) == 1, reading.problems
    return S.read_values(reading.reports[0])


def test_a_skewed_200_dpi_scan_reads_every_value_right() -> None:
    truth = S.truth_of(HOLOGIC)
    reading = read_scan(S.png(S.skew(S.render(HOLOGIC, 200)[0], 3.0), 200), 40)
    expected, right, certain_wrong, _marked, missing = S.score(reading, truth)
    assert (right, certain_wrong, missing) == (expected, 0, 0)
    assert abs(reading.page_angles[0] + 3.0) < 0.5  # straightened by the angle it was turned
    report = reading.reports[0].report
    assert report.device.serial == truth["device"]["serial"]  # type: ignore[index]
    assert all(v.crop_png.startswith(b"\x89PNG") for v in reading.reports[0].values if v.box)


def test_a_chinese_report_faxed_in_1_bit_at_200x100_dpi_leaves_no_wrong_value_looking_certain() -> None:
    truth = S.truth_of(PRIMUS)
    reading = read_scan(S.fax_tiff(S.render(PRIMUS, 200)), 40)
    expected, right, certain_wrong, _marked, _missing = S.score(reading, truth)
    got = _only(reading)
    assert got["patient_id"][0] == truth["patient_id"]
    assert got["L1-L4/-/bmd"][0] == f"{truth['measurements'][4]['bmd']:.3f}"  # type: ignore[index]
    assert certain_wrong == 0
    assert right >= expected * 0.6
