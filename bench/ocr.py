"""OCR of scanned, faxed and photographed DXA reports (issue 14): how many values come out right per
resolution and distortion, how many wrong values look certain (no failed self-check, confidence
above the mark; the target is 0), values not read at all, seconds of CPU per page on one core
(the process and its Tesseract children), and peak memory.

    .venv/bin/python bench/ocr.py [--all] [--markdown]

Pages are rendered from the shared sample PDFs (`tests/scans.py`): at 150, 200 and 300 dpi clean,
skewed ±3°, noised, JPEG-compressed; as a 1-bit 200×100 dpi fax TIFF; as a phone photo. By default
one report per layout (English and Chinese); `--all` reads every accepted sample PDF.
Needs tesseract-ocr with -eng, -chi-sim and -osd, and fonts-noto-cjk (`make system-deps`).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from ingest.ocr.read import read_scan  # noqa: E402
from tests import scans as S  # noqa: E402

Variant = Callable[[Path, int], bytes]


def _variants() -> dict[str, tuple[int, Variant]]:
    def page(pdf: Path, dpi: int) -> Image.Image:
        return S.render(pdf, dpi)[0]

    out: dict[str, tuple[int, Variant]] = {}
    for dpi in (150, 200, 300):
        out[f"{dpi} dpi clean PNG"] = (dpi, lambda p, d: S.png(page(p, d), d))
        out[f"{dpi} dpi skew +3°"] = (dpi, lambda p, d: S.png(S.skew(page(p, d), 3.0), d))
        out[f"{dpi} dpi skew -3°"] = (dpi, lambda p, d: S.png(S.skew(page(p, d), -3.0), d))
        out[f"{dpi} dpi noise"] = (dpi, lambda p, d: S.png(S.noise(page(p, d), seed=d), d))
        out[f"{dpi} dpi JPEG q35"] = (dpi, lambda p, d: S.jpeg(page(p, d), d, quality=35))
    out["fax TIFF 1-bit 200×100 dpi"] = (200, lambda p, d: S.fax_tiff(S.render(p, 200)))
    out["phone photo (perspective)"] = (200, lambda p, d: S.photo(page(p, 200), seed=7))
    return out


def _one_per_layout(pdfs: list[Path]) -> list[Path]:
    chosen: dict[str, Path] = {}
    for pdf in pdfs:
        kind = str(S.truth_of(pdf).get("kind"))
        chosen.setdefault(kind, pdf)
    return list(chosen.values())


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every accepted sample PDF, not one per layout")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    pdfs = S.accepted_pdfs()
    if not args.all:
        pdfs = _one_per_layout(pdfs)
    header = ("variant", "pages", "values", "right %", "wrong certain", "wrong marked", "missing", "s/page CPU")
    rows: list[tuple[str, ...]] = []
    totals = {"pages": 0, "cpu": 0.0, "wall": 0.0}
    for name, (dpi, make) in _variants().items():
        pages = values = right = certain = marked = missing = 0
        cpu = 0.0
        for pdf in pdfs:
            data = make(pdf, dpi)
            start_cpu, start_wall = _cpu(), time.perf_counter()
            reading = read_scan(data, 40)
            cpu += _cpu() - start_cpu
            totals["wall"] += time.perf_counter() - start_wall
            pages += reading.page_count
            n, r, c, m, miss = S.score(reading, S.truth_of(pdf))
            values, right, certain, marked, missing = values + n, right + r, certain + c, marked + m, missing + miss
        totals["pages"] += pages
        totals["cpu"] += cpu
        rows.append(
            (
                name,
                str(pages),
                str(values),
                f"{100 * right / max(values, 1):.1f}",
                str(certain),
                str(marked),
                str(missing),
                f"{cpu / max(pages, 1):.2f}",
            )
        )
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    _print(header, rows, args.markdown)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"\n{len(pdfs)} reports ({', '.join(sorted({str(S.truth_of(p).get('kind')) for p in pdfs}))}); "
        f"{totals['pages']} pages, {totals['cpu'] / max(totals['pages'], 1):.2f} s CPU per page "
        f"(one core: Tesseract runs with OMP_THREAD_LIMIT=1), {totals['wall'] / max(totals['pages'], 1):.2f} s wall; "
        f"peak RSS {me.ru_maxrss / 1024:.0f} MB (this process), {kids.ru_maxrss / 1024:.0f} MB (largest Tesseract)"
    )


def _print(header: tuple[str, ...], rows: list[tuple[str, ...]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
