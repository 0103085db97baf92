"""Parser throughput and memory, each next to a library floor on the same files.

    python bench/parse.py [../shared/samples] [--seconds 1.0]

Per format: files/s on one core (the process is pinned to one CPU) and peak Python heap
(tracemalloc) for our `parse_file`, and the same for the floor:

* DICOM floor: `pydicom.dcmread(stop_before_pixels=True)` plus the least work that reaches the
  results: a bare walk of the SR content tree (every item's concept name, by tag), or a bare
  read of the Hologic private element / ImageComments / encapsulated document.
* PDF: `bench/parse_pdf.py` (floors: pdfplumber `extract_text` and pypdfium2 text).

Ratios are ours / floor in time per file (target ≤ 1.5× for DICOM). Figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pydicom  # noqa: E402

from ingest.parse import ParseLimits, parse_file  # noqa: E402

LIMITS = ParseLimits()


@dataclass
class Row:
    fmt: str
    files: int
    ours_fps: float
    floor_fps: float
    ours_peak_kib: float
    floor_peak_kib: float
    floor_name: str


def samples_by_kind(samples: Path) -> dict[str, list[tuple[str, bytes]]]:
    out: dict[str, list[tuple[str, bytes]]] = {}
    for truth in sorted(samples.rglob("*.truth.json")):
        sample = truth.with_name(truth.name[: -len(".truth.json")])
        if not sample.is_file():
            continue
        meta = json.loads(truth.read_text(encoding="utf-8"))
        if meta.get("expect") != "accept":
            continue
        out.setdefault(meta["kind"], []).append((sample.name, sample.read_bytes()))
    return out


def _rate(fn: Callable[[str, bytes], Any], files: list[tuple[str, bytes]], seconds: float) -> float:
    for name, data in files:  # warm-up (imports, caches)
        fn(name, data)
    n = 0
    start = time.perf_counter()
    while True:
        for name, data in files:
            fn(name, data)
        n += len(files)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def _peak_kib(fn: Callable[[str, bytes], Any], files: list[tuple[str, bytes]]) -> float:
    peak = 0
    for name, data in files:
        tracemalloc.start()
        fn(name, data)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return peak / 1024


# --- DICOM floors -----------------------------------------------------------------------------

_CONTENT = pydicom.tag.BaseTag(0x0040A730)
_CONCEPT = pydicom.tag.BaseTag(0x0040A043)
_MEANING = pydicom.tag.BaseTag(0x00080104)


def _read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(BytesIO(data), stop_before_pixels=True)


def _walk(items: Any) -> int:
    n = 0
    for item in items:
        if _CONCEPT in item:
            item[_CONCEPT].value[0][_MEANING].value  # noqa: B018 (the floor touches each name)
        n += 1
        if _CONTENT in item:
            n += _walk(item[_CONTENT].value)
    return n


def floor_sr(name: str, data: bytes) -> Any:
    ds = _read(data)
    return _walk(ds[_CONTENT].value)


def floor_hologic(name: str, data: bytes) -> Any:
    ds = _read(data)
    return ds.get(0x00191000).value


def floor_image_comments(name: str, data: bytes) -> Any:
    ds = _read(data)
    return ds.get(0x00204000).value


def floor_encapsulated(name: str, data: bytes) -> Any:
    ds = _read(data)
    return ds.get(0x00420011).value


def ours(name: str, data: bytes) -> Any:
    return parse_file(data, name, LIMITS)


DICOM_FLOORS: dict[str, tuple[str, Callable[[str, bytes], Any]]] = {
    "hologic_apex_sc": ("dcmread + private element", floor_hologic),
    "ge_enhanced_sr": ("dcmread + bare tree walk", floor_sr),
    "ge_imagecomments_xml": ("dcmread + ImageComments", floor_image_comments),
    "encapsulated_pdf": ("dcmread + encapsulated doc", floor_encapsulated),
}


def bench_dicom(by_kind: dict[str, list[tuple[str, bytes]]], seconds: float) -> list[Row]:
    rows = []
    for kind, (floor_name, floor) in DICOM_FLOORS.items():
        files = by_kind.get(kind, [])
        if not files:
            continue
        rows.append(
            Row(
                fmt=kind,
                files=len(files),
                ours_fps=_rate(ours, files, seconds),
                floor_fps=_rate(floor, files, seconds),
                ours_peak_kib=_peak_kib(ours, files),
                floor_peak_kib=_peak_kib(floor, files),
                floor_name=floor_name,
            )
        )
    return rows


BENCHES: list[Callable[[dict[str, list[tuple[str, bytes]]], float], list[Row]]] = [bench_dicom]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="?", default=str(ROOT.parent / "shared" / "samples"))
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum timing per measurement")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    by_kind = samples_by_kind(Path(args.samples))
    print(
        f"{'format':<22}{'files':>6}{'ours f/s':>11}{'floor f/s':>11}{'time ratio':>12}"
        f"{'ours KiB':>10}{'floor KiB':>11}{'mem ratio':>11}  floor"
    )
    for bench in BENCHES:
        for r in bench(by_kind, args.seconds):
            print(
                f"{r.fmt:<22}{r.files:>6}{r.ours_fps:>11.0f}{r.floor_fps:>11.0f}"
                f"{r.floor_fps / r.ours_fps:>11.2f}x{r.ours_peak_kib:>10.0f}{r.floor_peak_kib:>11.0f}"
                f"{r.ours_peak_kib / max(r.floor_peak_kib, 1e-9):>10.2f}x  {r.floor_name}"
            )
    # PDF: files/s and pages/s against pdfplumber's and pypdfium2's bare text extraction.
    from parse_pdf import bench_pdf  # bench/parse_pdf.py, beside this file

    print()
    for line in bench_pdf(sorted(Path(args.samples).rglob("*.pdf")), args.seconds):
        print(line)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of this process (all formats): {rss / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
