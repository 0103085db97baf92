"""Per-format parse accuracy against the shared samples' truth files.

    python bench/parse_accuracy.py ../shared/samples

For every file with a `<file>.truth.json`: accepted files score one point per field that
matches the truth (per truth measurement: BMD within 0.0005, T and Z within 0.05 or both
null, a missing site losing all three; one point lost per extra site; exam date; device
manufacturer, model, serial; patient ID); expected rejects score when `parse_file` raises a
ParseError whose message holds one of `reason_contains`. One line per kind (the truth's
`kind`), then a total. Figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.errors import ParseError  # noqa: E402
from ingest.parse import ParseLimits, parse_file  # noqa: E402
from ingest.report import ParsedReport  # noqa: E402


def _close(a: float | None, b: float | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol + 1e-9


def score_report(report: ParsedReport, truth: dict[str, Any]) -> tuple[int, int, list[str]]:
    ok, total, wrong = 0, 0, []
    got = {(m.site, m.side): m for m in report.measurements}
    for w in truth["measurements"]:
        key = (w["site"], w["side"])
        g = got.get(key)
        checks = [
            ("bmd", g is not None and _close(g.bmd, w["bmd"], 0.0005)),
            ("t", g is not None and _close(g.t_score, w.get("t_score"), 0.05)),
            ("z", g is not None and _close(g.z_score, w.get("z_score"), 0.05)),
        ]
        for field, good in checks:
            total += 1
            ok += good
            if not good:
                wrong.append(f"{key} {field}")
    want = {(w["site"], w["side"]) for w in truth["measurements"]}
    for extra in set(got) - want:
        total += 1
        wrong.append(f"extra {extra}")
    dev = truth["device"]
    scalar = [
        ("exam_date", report.exam_date == date.fromisoformat(truth["exam_date"])),
        ("manufacturer", report.device.manufacturer == dev["manufacturer"]),
        ("model", report.device.model == dev["model"]),
        ("serial", report.device.serial == dev["serial"]),
        ("patient_id", report.patient.patient_id == truth["patient_id"]),
    ]
    for field, good in scalar:
        total += 1
        ok += good
        if not good:
            wrong.append(field)
    return ok, total, wrong


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="?", default=str(ROOT.parent / "shared" / "samples"))
    ap.add_argument("-v", "--verbose", action="store_true", help="list every wrong field")
    args = ap.parse_args(argv)
    samples = Path(args.samples)
    fields: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rejects: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    files: dict[str, int] = defaultdict(int)
    limits = ParseLimits()
    for truth_path in sorted(samples.rglob("*.truth.json")):
        sample = truth_path.with_name(truth_path.name[: -len(".truth.json")])
        if not sample.is_file():
            continue
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        kind = truth["kind"]
        files[kind] += 1
        rel = sample.relative_to(samples)
        try:
            report: ParsedReport | None = parse_file(sample.read_bytes(), sample.name, limits)
            error: BaseException | None = None
        except Exception as exc:  # a crash scores as a failure, and is named
            report, error = None, exc
        if truth["expect"] == "reject":
            rejects[kind][1] += 1
            msg = error.message.lower() if isinstance(error, ParseError) else ""
            good = any(w.lower() in msg for w in truth["reason_contains"])
            rejects[kind][0] += good
            if not good and args.verbose:
                got = type(error).__name__ if error else "accepted"
                print(f"  {rel}: expected reject, got {got}: {error}")
            continue
        if report is None:
            n = 3 * len(truth["measurements"]) + 5
            fields[kind][1] += n
            if args.verbose:
                print(f"  {rel}: {type(error).__name__}: {error}")
            continue
        ok, total, wrong = score_report(report, truth)
        fields[kind][0] += ok
        fields[kind][1] += total
        if wrong and args.verbose:
            print(f"  {rel}: " + ", ".join(wrong))
    all_ok = all_total = rej_ok = rej_total = 0
    for kind in sorted(files):
        f_ok, f_total = fields[kind]
        r_ok, r_total = rejects[kind]
        parts = [f"{kind:<32} files {files[kind]:>3}"]
        if f_total:
            parts.append(f"fields {f_ok}/{f_total} = {100 * f_ok / f_total:6.2f}%")
        if r_total:
            parts.append(f"rejects {r_ok}/{r_total} = {100 * r_ok / r_total:6.2f}%")
        print("  ".join(parts))
        all_ok, all_total = all_ok + f_ok, all_total + f_total
        rej_ok, rej_total = rej_ok + r_ok, rej_total + r_total
    print(
        f"{'TOTAL':<32} files {sum(files.values()):>3}  "
        f"fields {all_ok}/{all_total} = {100 * all_ok / max(all_total, 1):6.2f}%  "
        f"rejects {rej_ok}/{rej_total} = {100 * rej_ok / max(rej_total, 1):6.2f}%"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
