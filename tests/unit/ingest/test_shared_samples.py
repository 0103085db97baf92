"""Every file in ../shared/samples through `parse_file`, against its `<file>.truth.json`.

The samples were written independently of the parsers, from the vendors' documented layouts;
one test per file, so a new sample is picked up without touching this code.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import ParseError
from ingest.parse import ParseLimits, parse_file
from ingest.report import ParsedReport

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO.parent / "shared" / "samples"
TRUTH_SUFFIX = ".truth.json"


def sample_files() -> list[Path]:
    if not SAMPLES.is_dir():
        return []
    out = []
    for truth in SAMPLES.rglob("*" + TRUTH_SUFFIX):  # rglob matches dot-files too
        sample = truth.with_name(truth.name[: -len(TRUTH_SUFFIX)])
        if sample.is_file():
            out.append(sample)
    return sorted(out)


FILES = sample_files()


def _id(p: Path) -> str:
    return str(p.relative_to(SAMPLES))


def _close(a: float | None, b: float | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol + 1e-9


def compare(report: ParsedReport, truth: dict[str, Any]) -> list[str]:
    """Differences between a report and its truth, in words (empty when they agree)."""
    problems: list[str] = []
    got = {(m.site, m.side): m for m in report.measurements}
    want = {(m["site"], m["side"]): m for m in truth["measurements"]}
    if len(got) != len(report.measurements):
        problems.append("duplicate (site, side) in measurements")
    if set(got) != set(want):
        problems.append(
            f"sites differ: missing {sorted(set(want) - set(got), key=str)}, "
            f"extra {sorted(set(got) - set(want), key=str)}"
        )
    for key in set(got) & set(want):
        g, w = got[key], want[key]
        if not _close(g.bmd, w["bmd"], 0.0005):
            problems.append(f"{key} bmd {g.bmd} != {w['bmd']}")
        if not _close(g.t_score, w.get("t_score"), 0.05):
            problems.append(f"{key} t {g.t_score} != {w.get('t_score')}")
        if not _close(g.z_score, w.get("z_score"), 0.05):
            problems.append(f"{key} z {g.z_score} != {w.get('z_score')}")
    if report.exam_date != date.fromisoformat(truth["exam_date"]):
        problems.append(f"exam_date {report.exam_date} != {truth['exam_date']}")
    dev = truth["device"]
    for f in ("manufacturer", "model", "serial"):
        if getattr(report.device, f) != dev[f]:
            problems.append(f"device.{f} {getattr(report.device, f)!r} != {dev[f]!r}")
    if report.patient.patient_id != truth["patient_id"]:
        problems.append(f"patient_id {report.patient.patient_id!r} != {truth['patient_id']!r}")
    return problems


@pytest.mark.skipif(not FILES, reason="../shared/samples not present")
@pytest.mark.parametrize("sample", FILES, ids=_id)
def test_sample_matches_truth(sample: Path) -> None:
    truth = json.loads(Path(str(sample) + TRUTH_SUFFIX).read_text(encoding="utf-8"))
    data = sample.read_bytes()
    if truth["expect"] == "reject":
        with pytest.raises(ParseError) as info:
            parse_file(data, sample.name, ParseLimits())
        reason = info.value.message.lower()
        assert any(word.lower() in reason for word in truth["reason_contains"]), reason
        return
    report = parse_file(data, sample.name, ParseLimits())
    assert compare(report, truth) == []


def test_samples_folder_is_found() -> None:
    if not SAMPLES.is_dir():
        pytest.skip("../shared/samples not present")
    assert len(FILES) >= 78
    assert any(p.name.startswith("..") for p in FILES), "dot-files must be collected too"
