"""Scans made from the shared sample PDFs, for the OCR tests and `bench/ocr.py`: a page rendered at
a resolution, then skewed, noised, JPEG-compressed, sent as a 1-bit 200×100 dpi fax TIFF, or
photographed (a keystone perspective on a darker table, uneven light). Deterministic: every
distortion takes its seed."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
if not SAMPLES.is_dir():  # the worktree layout: /work/wt-x/tests -> /work/shared
    SAMPLES = Path("/work/shared/samples")


def render(pdf: Path | bytes, dpi: int) -> list[Image.Image]:
    """Every page of a PDF as a grayscale image at `dpi` (Chinese pages need a CJK font: the
    Makefile's system-deps install fonts-noto-cjk)."""
    doc = pdfium.PdfDocument(pdf.read_bytes() if isinstance(pdf, Path) else pdf)
    try:
        return [doc[i].render(scale=dpi / 72, grayscale=True).to_pil().convert("L") for i in range(len(doc))]
    finally:
        doc.close()


def png(img: Image.Image, dpi: int | None) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", **({"dpi": (dpi, dpi)} if dpi else {}))
    return out.getvalue()


def jpeg(img: Image.Image, dpi: int | None, quality: int = 35) -> bytes:
    out = io.BytesIO()
    img.convert("RGB" if img.mode != "L" else "L").save(
        out, format="JPEG", quality=quality, **({"dpi": (dpi, dpi)} if dpi else {})
    )
    return out.getvalue()


def skew(img: Image.Image, degrees: float) -> Image.Image:
    return img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)


def noise(img: Image.Image, seed: int, sigma: float = 28.0, speckle: float = 0.004) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0.0, sigma, (img.height, img.width))
    dots = rng.random((img.height, img.width))
    arr[dots < speckle / 2] = 0
    arr[dots > 1 - speckle / 2] = 255
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def fax_tiff(pages: Sequence[Image.Image], threshold: int = 160) -> bytes:
    """Pages rendered at 200 dpi, sent as a fax does: 100 dpi vertically, 1 bit, CCITT G4, one
    multi-page TIFF declaring 200×100 dpi."""
    frames = [
        p.resize((p.width, p.height // 2), Image.Resampling.BOX)
        .point(lambda v: 255 if v > threshold else 0)
        .convert("1")
        for p in pages
    ]
    out = io.BytesIO()
    frames[0].save(out, format="TIFF", compression="group4", dpi=(200, 100), save_all=True, append_images=frames[1:])
    return out.getvalue()


def photo(img: Image.Image, seed: int, keystone: float = 0.035) -> bytes:
    """A phone photo of the printed page: the page a little smaller than the frame on a darker
    table, seen from slightly below (a keystone), light falling off to one side; JPEG without a
    resolution."""
    rng = np.random.default_rng(seed)
    w, h = img.width, img.height
    margin_x, margin_y = int(w * 0.06), int(h * 0.05)
    canvas_w, canvas_h = w + 2 * margin_x, h + 2 * margin_y
    k = keystone * w
    jitter = rng.uniform(-0.01, 0.01, 8) * w
    # where the page's corners land on the photo (tl, bl, br, tr)
    quad = [
        (margin_x + k + jitter[0], margin_y + jitter[1]),
        (margin_x + jitter[2], margin_y + h + jitter[3]),
        (margin_x + w + jitter[4], margin_y + h + jitter[5]),
        (margin_x + w - k + jitter[6], margin_y + jitter[7]),
    ]
    coeffs = _perspective(quad, [(0, 0), (0, h), (w, h), (w, 0)])
    page = Image.new("L", (canvas_w, canvas_h), 255)
    page.paste(img, (0, 0))
    mask = Image.new("L", (w, h), 255)
    full_mask = Image.new("L", (canvas_w, canvas_h), 0)
    full_mask.paste(mask, (0, 0))
    warped = page.transform((canvas_w, canvas_h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
    warped_mask = full_mask.transform((canvas_w, canvas_h), Image.Transform.PERSPECTIVE, coeffs)
    table = Image.new("L", (canvas_w, canvas_h), 70)
    shot = Image.composite(warped, table, warped_mask)
    light = np.linspace(1.0, 0.78, canvas_w)[None, :] * np.ones((canvas_h, 1))
    arr = np.asarray(shot, dtype=np.float64) * light + rng.normal(0, 6, (canvas_h, canvas_w))
    shot = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    shot = shot.resize((2400, round(2400 * canvas_h / canvas_w)), Image.Resampling.LANCZOS)
    return jpeg(shot, None, quality=80)


def _perspective(dst: Sequence[tuple[float, float]], src: Sequence[tuple[float, float]]) -> list[float]:
    """PIL's PERSPECTIVE coefficients mapping output pixels (`dst`) back to input pixels (`src`)."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(rows, dtype=np.float64)
    b = np.array([c for pair in src for c in pair], dtype=np.float64)
    return [float(c) for c in np.linalg.solve(a, b)]


def accepted_pdfs() -> list[Path]:
    """Every shared sample PDF a parser must accept (its truth says `accept`)."""
    import json

    found = []
    for pdf in sorted(SAMPLES.rglob("*.pdf")):
        truth = pdf.with_name(pdf.name + ".truth.json")
        if truth.is_file() and json.loads(truth.read_text(encoding="utf-8")).get("expect") == "accept":
            found.append(pdf)
    return found


def truth_of(pdf: Path) -> dict[str, object]:
    import json

    data: dict[str, object] = json.loads(pdf.with_name(pdf.name + ".truth.json").read_text(encoding="utf-8"))
    return data


def expected_values(truth: dict[str, object]) -> dict[str, str]:
    """The values a correct reading gives, keyed as `ingest.ocr.checks.value_key` names them."""
    want: dict[str, str] = {"patient_id": str(truth["patient_id"]), "exam_date": str(truth["exam_date"])}
    for m in truth["measurements"]:  # type: ignore[attr-defined]
        prefix = f"{m['site']}/{m['side'] or '-'}/"
        for column, key in (("bmd", "bmd"), ("t", "t_score"), ("z", "z_score")):
            if m.get(key) is not None:
                want[prefix + column] = f"{float(m[key]):.3f}"
    return want


def read_values(report: object) -> dict[str, tuple[str, bool]]:
    """A `ScanReport`'s values as (normalised text, doubtful)."""
    out: dict[str, tuple[str, bool]] = {}
    for v in report.values:  # type: ignore[attr-defined]
        text = v.text
        if v.key not in ("patient_id", "exam_date", "birth_date", "device_serial", "device_model"):
            with contextlib.suppress(ValueError):
                text = f"{float(text):.3f}"
        out[v.key] = (text, v.doubtful)
    return out


def score(reading: object, truth: dict[str, object]) -> tuple[int, int, int, int, int]:
    """(values expected, right, wrong but looking certain, wrong and marked, missing)."""
    want = expected_values(truth)
    reports = reading.reports  # type: ignore[attr-defined]
    got = read_values(reports[0]) if len(reports) == 1 else {}
    right = certain_wrong = marked_wrong = missing = 0
    for key, value in want.items():
        if key not in got:
            missing += 1
            continue
        text, doubtful = got[key]
        if text == value:
            right += 1
        elif doubtful:
            marked_wrong += 1
        else:
            certain_wrong += 1
    return len(want), right, certain_wrong, marked_wrong, missing


def blank_out(pdf: Path, dpi: int, word: str) -> Image.Image:
    """The first page with every printed occurrence of `word` painted over (a fold, a stamp)."""
    import pdfplumber
    from PIL import ImageDraw

    page = render(pdf, dpi)[0]
    draw = ImageDraw.Draw(page)
    k = dpi / 72
    with pdfplumber.open(pdf) as doc:
        for w in doc.pages[0].extract_words():
            if word in w["text"]:
                draw.rectangle((w["x0"] * k - 4, w["top"] * k - 4, w["x1"] * k + 4, w["bottom"] * k + 4), fill=255)
    return page
