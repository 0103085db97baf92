"""PDF parse throughput, memory and accuracy, next to the two library floors on the same files.

    python bench/parse_pdf.py [PATH ...] [--seconds 1.0]      (default: every PDF in ../shared/samples)

Per layout: files/s and pages/s of our `parse_pdf` on one core (each measurement runs in a fresh
process pinned to one CPU), beside pypdfium2's bare text extraction and pdfplumber's bare
`extract_text`, as ratios; peak RSS of each process; and accuracy against `<file>.truth.json`
(sites, sides, BMD to 0.0005, T/Z to 0.05, exam date, device triple, or the expected rejection).
Target (issue 3): at least 3x faster than pdfplumber at 100 % accuracy. Figures, not a test.
`bench_pdf(paths)` returns the lines, so `bench/parse.py` can print them with the DICOM figures.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Files = list[tuple[str, str, bytes]]  # (group, name, pdf bytes)


def _pdf_bytes(path: Path) -> bytes:
    if path.suffix.lower() == ".dcm":  # Encapsulated PDF: bench the PDF inside
        import pydicom

        return bytes(pydicom.dcmread(path, stop_before_pixels=True).EncapsulatedDocument)
    return path.read_bytes()


def _truth(path: Path) -> dict[str, Any] | None:
    truth = path.with_name(path.name + ".truth.json")
    return dict(json.loads(truth.read_text())) if truth.is_file() else None


def _group(path: Path, truth: dict[str, Any] | None) -> str:
    if truth is None:
        return "pdf (no truth)"
    if truth.get("expect") == "reject":
        return "pdf rejects"
    return str(truth.get("format", {}).get("layout") or truth.get("kind") or "pdf")


# --- the three things timed ----------------------------------------------------------------------


def run_ours(data: bytes) -> int:
    from ingest.errors import ParseError
    from ingest.pdf import parse_pdf

    try:
        return len(parse_pdf(data, "bench.pdf").measurements)
    except ParseError:
        return 0


def run_pdfium(data: bytes) -> int:
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        return 0
    total = 0
    for i in range(len(doc)):
        page = doc[i]
        textpage = page.get_textpage()
        total += len(textpage.get_text_range())
        textpage.close()
        page.close()
    doc.close()
    return total


def run_pdfplumber(data: bytes) -> int:
    import pdfplumber

    try:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            return sum(len(page.extract_text() or "") for page in pdf.pages)
    except Exception:  # encrypted or damaged: the floor reads nothing either
        return 0


METHODS: dict[str, Callable[[bytes], int]] = {
    "ours": run_ours,
    "pypdfium2": run_pdfium,
    "pdfplumber": run_pdfplumber,
}


def _measure(method: str, files: Files, seconds: float) -> tuple[dict[str, float], int]:
    """In a fresh process: seconds per file for each group, and this process's peak RSS (KiB)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    fn = METHODS[method]
    for _, _, data in files:  # warm-up: imports, template loading
        fn(data)
    per_file: dict[str, float] = {}
    for group in sorted({g for g, _, _ in files}):
        datas = [d for g, _, d in files if g == group]
        runs = 0
        start = time.perf_counter()
        while True:
            for data in datas:
                fn(data)
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        per_file[group] = elapsed / (runs * len(datas))
    return per_file, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _accuracy(path: Path, data: bytes, truth: dict[str, Any]) -> bool:
    from ingest.errors import ParseError
    from ingest.pdf import parse_pdf

    try:
        report = parse_pdf(data, path.name)
    except ParseError as exc:
        reason = exc.message.lower()
        return truth.get("expect") == "reject" and any(w in reason for w in truth.get("reason_contains", []))
    if truth.get("expect") != "accept":
        return False
    device = truth["device"]
    if (
        report.patient.patient_id != truth["patient_id"]
        or report.exam_date.isoformat() != truth["exam_date"]
        or (report.device.manufacturer, report.device.model, report.device.serial)
        != (device["manufacturer"], device["model"], device["serial"])
    ):
        return False
    got = {(m.site, m.side): m for m in report.measurements}
    want = {(m["site"], m["side"]): m for m in truth["measurements"]}
    if set(got) != set(want):
        return False
    for key, w in want.items():
        g = got[key]
        if abs(g.bmd - w["bmd"]) > 0.0005:
            return False
        for a, b in ((g.t_score, w["t_score"]), (g.z_score, w["z_score"])):
            if (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > 0.05):
                return False
    return True


def _pages(data: bytes) -> int:
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        return 1  # encrypted: counts as one unopened document
    count = len(doc)
    doc.close()
    return count


def bench_pdf(paths: Sequence[Path], seconds: float = 1.0) -> list[str]:
    files: Files = []
    pages: dict[str, int] = {}
    correct: dict[str, list[bool]] = {}
    for path in paths:
        truth = _truth(path)
        data = _pdf_bytes(path)
        group = _group(path, truth)
        files.append((group, path.name, data))
        pages[group] = pages.get(group, 0) + _pages(data)
        if truth is not None:
            correct.setdefault(group, []).append(_accuracy(path, data, truth))
    if not files:
        return ["pdf: no files"]
    ctx = multiprocessing.get_context("spawn")  # each method measured from a clean interpreter
    results: dict[str, tuple[dict[str, float], int]] = {}
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for method in METHODS:
            results[method] = pool.apply(_measure, (method, files, seconds))
    groups = sorted(pages)
    counts = {g: sum(1 for fg, _, _ in files if fg == g) for g in groups}
    lines = [
        f"{'pdf layout':<24}{'files':>6}{'pages':>6}{'ours f/s':>10}{'ours p/s':>10}{'pdfium f/s':>12}"
        f"{'plumber f/s':>13}{'vs plumber':>12}{'vs pdfium':>11}{'accuracy':>10}",
    ]
    total = {m: 0.0 for m in METHODS}
    for g in groups:
        t = {m: results[m][0][g] for m in METHODS}
        for m in METHODS:
            total[m] += t[m] * counts[g]
        acc = correct.get(g)
        acc_text = f"{100 * sum(acc) / len(acc):.0f} %" if acc else "-"
        lines.append(
            f"{g:<24}{counts[g]:>6}{pages[g]:>6}{1 / t['ours']:>10.0f}"
            f"{pages[g] / counts[g] / t['ours']:>10.0f}"
            f"{1 / t['pypdfium2']:>12.0f}{1 / t['pdfplumber']:>13.1f}"
            f"{t['pdfplumber'] / t['ours']:>11.1f}x{t['ours'] / t['pypdfium2']:>10.2f}x{acc_text:>10}"
        )
    n = len(files)
    all_acc = [ok for oks in correct.values() for ok in oks]
    lines.append(
        f"{'all PDFs':<24}{n:>6}{sum(pages.values()):>6}{n / total['ours']:>10.0f}"
        f"{sum(pages.values()) / total['ours']:>10.0f}{n / total['pypdfium2']:>12.0f}"
        f"{n / total['pdfplumber']:>13.1f}{total['pdfplumber'] / total['ours']:>11.1f}x"
        f"{total['ours'] / total['pypdfium2']:>10.2f}x"
        f"{(f'{100 * sum(all_acc) / len(all_acc):.0f} %' if all_acc else '-'):>10}"
    )
    lines.append(
        "peak RSS per process (MiB): "
        + ", ".join(f"{m} {results[m][1] / 1024:.1f}" for m in METHODS)
        + "   ('vs plumber' = pdfplumber time / ours, target >= 3x; 'vs pdfium' = ours / bare pdfium time)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="PDF files or folders (default: ../shared/samples)")
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum timing per layout and method")
    args = ap.parse_args(argv)
    roots = [Path(p) for p in args.paths] or [ROOT.parent / "shared" / "samples"]
    paths: list[Path] = []
    for root in roots:
        if root.is_dir():
            paths += sorted(root.rglob("*.pdf"))
            for dcm in sorted(root.rglob("*.dcm")):  # Encapsulated PDFs, by their truth
                truth = _truth(dcm)
                if truth and "encapsulated" in str(truth.get("kind", "")):
                    paths.append(dcm)
        else:
            paths.append(root)
    for line in bench_pdf(paths, args.seconds):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
