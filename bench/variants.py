"""The shared samples as hospitals send them: one row per variant the ingest tests build, with how
many files came out right, quarantined (with a reason) or wrong (a value under another patient, a
report or site lost). `wrong` must be 0 everywhere (issue 10).

    .venv/bin/python bench/variants.py [--markdown]

Needs ghostscript, qpdf and poppler-utils (`make system-deps`) and ../shared/samples.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.errors import ParseError  # noqa: E402
from ingest.parse import ParseLimits, parse_file_reports  # noqa: E402
from tests.unit.ingest.dicom_reencode import REENCODINGS  # noqa: E402
from tests.unit.ingest.pdf_variants import SINGLE_VARIANTS, accepted_pdfs, concat, judge, truth_of  # noqa: E402
from tests.unit.ingest.spellings import axes, encapsulated, rewritten  # noqa: E402
from tests.unit.ingest.test_pdf_variants import MULTI  # noqa: E402
from tests.unit.ingest.test_shared_samples import SAMPLES, TRUTH_SUFFIX, compare  # noqa: E402

Row = tuple[str, int, int, int, int]  # variant, files, correct, quarantined, wrong


def _count(name: str, verdicts: Iterable[str]) -> Row:
    c = Counter(verdicts)
    return (name, sum(c.values()), c["correct"], c["quarantined"], c["wrong"])


def pdf_rows() -> list[Row]:
    pdfs = accepted_pdfs()
    rows = [
        _count(f"pdf {name}", (judge(build(p.read_bytes()), [truth_of(p)]).verdict for p in pdfs))
        for name, build in SINGLE_VARIANTS.items()
    ]
    for name, files in MULTI.items():
        verdict = judge(concat(*(f.read_bytes() for f in files)), [truth_of(f) for f in files]).verdict
        rows.append(_count(f"multi-report {name} ({len(files)} reports)", [verdict]))
    return rows


def spelling_rows() -> list[Row]:
    pdfs = accepted_pdfs()
    rows = []
    for name, rewrite in axes().items():
        verdicts = []
        for sample in pdfs:
            truth = truth_of(sample)
            data = rewritten(sample, truth, rewrite)
            if data is None:
                continue
            outcome = judge(data, [truth])
            verdict = outcome.verdict
            if verdict == "correct" and name.startswith("birth_date"):
                born = parse_file_reports(data, sample.name, ParseLimits())[0].patient.birth_date
                verdict = "correct" if born == date.fromisoformat(truth["birth_date"]) else "wrong"
            verdicts.append(verdict)
            if name in ("exam_date:us_long", "exam_date:chinese", "decimal_comma", "unit_mg_cm2"):
                twin = judge(encapsulated(data, truth["patient_id"]), [truth]).verdict
                verdicts.append(twin)
        rows.append(_count(f"spelling {name}", verdicts))
    return rows


def dicom_rows() -> list[Row]:
    truths = sorted(SAMPLES.rglob("*.dcm" + TRUTH_SUFFIX))
    samples = [Path(str(t)[: -len(TRUTH_SUFFIX)]) for t in truths]
    samples = [s for s in samples if truth_of(s)["expect"] == "accept"]
    rows = []
    for name, encode in REENCODINGS.items():
        verdicts = []
        for sample in samples:
            try:
                reports = parse_file_reports(encode(sample.read_bytes()), sample.name, ParseLimits())
            except ParseError:
                verdicts.append("quarantined")
                continue
            ok = len(reports) == 1 and not compare(reports[0], truth_of(sample))
            verdicts.append("correct" if ok else "wrong")
        rows.append(_count(f"dicom {name}", verdicts))
    return rows


def date_order_rows() -> list[Row]:
    """Every date printed as a number only (no month in words), in either order, with and without
    the scan ID and the units that mark a locale (`tests/unit/ingest/test_pdf_date_order.py`)."""
    from tests.unit.ingest.spellings import (
        Rewrite,
        body_units,
        numeric_dates_everywhere,
        rewritten_all,
        sample_text,
        without_scan_id,
    )
    from tests.unit.ingest.test_pdf_date_order import VARIANTS

    rows = []
    for name, (order, sep, keep_id, units) in sorted(VARIANTS.items()):
        verdicts = []
        for sample in accepted_pdfs():
            truth = truth_of(sample)
            if sample_text(sample)[1].date_order == "YMD":
                continue
            rewrites: list[Rewrite] = [numeric_dates_everywhere(order, sep), body_units(units)]
            rewrites += [] if keep_id else [without_scan_id]
            data = rewritten_all(sample, truth, rewrites)
            verdict = judge(data, [truth]).verdict
            if verdict == "correct" and truth.get("birth_date"):
                born = parse_file_reports(data, sample.name, ParseLimits())[0].patient.birth_date
                verdict = "correct" if born == date.fromisoformat(truth["birth_date"]) else "wrong"
            verdicts.append(verdict)
        rows.append(_count(f"numeric dates {name}", verdicts))
    return rows


def dicom_multi_rows() -> list[Row]:
    """DICOM files of several reports: Part 10 files one after the other, nested SR documents,
    DICOMDIR-like directories carrying their instances (`tests/unit/ingest/dicom_multi.py`)."""
    from tests.unit.ingest import dicom_multi as m

    cases: dict[str, tuple[bytes, list[Path]]] = {
        "concatenated sr+sr": (m.concatenated(m.SR_A, m.SR_B), [m.SR_A, m.SR_B]),
        "concatenated hologic+epdf+sr": (m.concatenated(m.HOLOGIC, m.EPDF, m.SR_C), [m.HOLOGIC, m.EPDF, m.SR_C]),
        "nested SR, 2 patients": (m.nested_sr(m.SR_A, [m.document(m.SR_A), m.document(m.SR_B)]), [m.SR_A, m.SR_B]),
        "nested SR, header's + another": (
            m.nested_sr(m.SR_A, [m.document(m.SR_B)], top_level_of_header=True),
            [m.SR_A, m.SR_B],
        ),
        "directory, 3 instances": (m.directory([m.EPDF, m.SR_A, m.HOLOGIC]), [m.EPDF, m.SR_A, m.HOLOGIC]),
        "directory by level (offsets)": (m.directory([m.SR_A, m.SR_B], by_level=True), [m.SR_A, m.SR_B]),
        "nested SR, one unnamed (refused)": (
            m.nested_sr(m.SR_A, [m.document(m.SR_B), m.document(m.SR_C, subject=False)]),
            [m.SR_B, m.SR_C],
        ),
    }
    rows = []
    for name, (data, samples) in cases.items():
        try:
            reports = parse_file_reports(data, "multi.dcm", ParseLimits())
        except ParseError:
            rows.append(_count(f"dicom multi {name}", ["quarantined"]))
            continue
        ok = len(reports) == len(samples) and not any(
            compare(report, truth_of(sample)) for report, sample in zip(reports, samples, strict=True)
        )
        rows.append(_count(f"dicom multi {name} ({len(samples)} reports)", ["correct" if ok else "wrong"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    groups: list[Callable[[], list[Row]]] = [pdf_rows, spelling_rows, date_order_rows, dicom_rows, dicom_multi_rows]
    rows = [row for group in groups for row in group()]
    total: Row = ("TOTAL", *(sum(r[i] for r in rows) for i in range(1, 5)))  # type: ignore[assignment]
    if args.markdown:
        print("| variant | files | correct | quarantined | wrong |\n| --- | --- | --- | --- | --- |")
        for row in [*rows, total]:
            print("| " + " | ".join(map(str, row)) + " |")
    else:
        for row in [*rows, total]:
            print(f"{row[0]:<58} {row[1]:>5} {row[2]:>7} {row[3]:>11} {row[4]:>5}")
    return 1 if total[4] else 0


if __name__ == "__main__":
    raise SystemExit(main())
