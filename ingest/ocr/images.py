"""Page images of a scan: decoded, made upright, straightened and brought to the resolution the
OCR engine reads best.

A fax arrives at 200×100 dpi (pixels twice as tall as wide), a phone photo at whatever the camera
wrote, a scanner's PDF at 150–600 dpi; Tesseract reads this report print best near 300 dpi with
square pixels, so every page is resampled there from the resolution the file declares (or the
one its width implies for an A4/Letter page when it declares none). A page is turned upright
from Tesseract's own orientation detection and straightened by the angle at which its text rows
project most sharply.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from ingest.errors import TooLarge, UnreadableFile

TARGET_DPI = 300
_PAGE_WIDTH_IN = 8.27  # A4; a Letter page (8.5 in) comes out 3 % smaller, well within what OCR reads
_MAX_PIXELS = 60_000_000  # a decompression bomb is refused before it is decoded

IMAGE_KINDS = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def image_kind(data: bytes) -> str | None:
    """The image format from the file's first bytes (never from its name)."""
    for magic, kind in IMAGE_KINDS.items():
        if data.startswith(magic):
            return kind
    return None


@dataclass(frozen=True)
class PageImage:
    """One page, grayscale, upright and straight at `TARGET_DPI`; `angle` and `turned` say what
    was corrected (degrees), for the reviewer's information."""

    image: Image.Image
    angle: float = 0.0
    turned: int = 0


def _declared_dpi(img: Image.Image) -> tuple[float, float] | None:
    dpi = img.info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2:
        x, y = float(dpi[0]), float(dpi[1])
        if 50 <= x <= 1200 and 50 <= y <= 1200:
            return x, y
    return None


def to_target_dpi(img: Image.Image, dpi: tuple[float, float] | None) -> Image.Image:
    """Square pixels at `TARGET_DPI`. Without a declared resolution the page is taken to be an A4
    page wide (a photo's pixels say nothing about inches)."""
    if dpi is None:
        guess = img.width / _PAGE_WIDTH_IN
        dpi = (guess, guess)
    sx, sy = TARGET_DPI / dpi[0], TARGET_DPI / dpi[1]
    if abs(sx - 1) < 0.02 and abs(sy - 1) < 0.02:
        return img
    size = (max(1, round(img.width * sx)), max(1, round(img.height * sy)))
    resized = img.resize(size, Image.Resampling.LANCZOS)
    if sx > 1.2 or sy > 1.2:
        # An enlarged page's stair-stepped edges (a fax's 1-bit 100 dpi rows most of all) read as
        # extra strokes: a slight blur gives the engine the glyph's outline back.
        resized = resized.filter(ImageFilter.GaussianBlur(radius=1.0))
    return resized


def _gray(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img) or img  # a phone's orientation tag
    if img.mode == "1":  # a fax: kept 1-bit until resampled, then smoothed (see `to_target_dpi`)
        return img.convert("L")
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L")


def decode_images(data: bytes, max_pages: int) -> Iterator[tuple[Image.Image, tuple[float, float] | None]]:
    """Each frame of a PNG, JPEG or (multi-page) TIFF, grayscale, with its declared resolution."""
    Image.MAX_IMAGE_PIXELS = _MAX_PIXELS
    try:
        img = Image.open(io.BytesIO(data))
        frames = getattr(img, "n_frames", 1)
        if frames > max_pages:
            raise TooLarge(f"image file has {frames} pages, over the limit of {max_pages}")
        for index in range(frames):
            img.seek(index)
            dpi = _declared_dpi(img)
            yield _gray(img.copy()), dpi
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise UnreadableFile(
            "image cannot be decoded (damaged, truncated or too large); scan the report again"
        ) from None


def render_pdf_pages(data: bytes, max_pages: int) -> Iterator[tuple[Image.Image, tuple[float, float] | None]]:
    """The pages of an image-only PDF, rendered at `TARGET_DPI` (pdfium draws the scan it holds)."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        raise UnreadableFile("PDF cannot be opened (damaged or truncated)") from None
    try:
        if len(doc) > max_pages:
            raise TooLarge(f"PDF has {len(doc)} pages, over the limit of {max_pages}")
        for index in range(len(doc)):
            page = doc[index]
            bitmap = page.render(scale=TARGET_DPI / 72, grayscale=True)
            yield bitmap.to_pil().convert("L"), (TARGET_DPI, TARGET_DPI)
            page.close()
    finally:
        doc.close()


def noise_level(img: Image.Image) -> float:
    """The gray-level noise of a page (robust σ of what a 3×3 median takes away): a few units on a
    clean render or scan, tens on a noisy fax or a dark photo."""
    w, h = img.size
    box = (max(0, w // 2 - 500), max(0, h // 2 - 500), min(w, w // 2 + 500), min(h, h // 2 + 500))
    small = img.crop(box)  # native pixels: a reduced copy would average the noise away
    arr = np.asarray(small, dtype=np.int16)
    smooth = np.asarray(small.filter(ImageFilter.MedianFilter(3)), dtype=np.int16)
    return float(1.4826 * np.median(np.abs(arr - smooth)))


def denoise(img: Image.Image, noisy: bool) -> Image.Image:
    """Speckle and grain off a noisy page once enlarged to the OCR resolution (a median keeps
    strokes' edges, which a blur would not)."""
    return img.filter(ImageFilter.MedianFilter(3)) if noisy else img


def skew_angle(img: Image.Image, limit: float = 6.0, step: float = 0.25) -> float:
    """The rotation (degrees, counter-clockwise) that makes text rows horizontal: the angle whose
    row projection of the dark pixels varies most (rows of text and white gaps between them)."""
    small = img.copy()
    small.thumbnail((1000, 1000))
    ink = np.asarray(small, dtype=np.uint8) < 128
    if ink.mean() < 0.001:
        return 0.0
    best, best_score = 0.0, -1.0
    base = Image.fromarray((ink * 255).astype(np.uint8))
    angle = -limit
    while angle <= limit + 1e-9:
        rotated = np.asarray(base.rotate(angle, resample=Image.Resampling.NEAREST, expand=False), dtype=np.float64)
        profile = rotated.sum(axis=1)
        score = float(np.square(np.diff(profile)).sum())
        if score > best_score:
            best, best_score = angle, score
        angle += step
    # a finer pass around the best coarse angle
    for fine in np.arange(best - step, best + step + 1e-9, step / 5):
        rotated = np.asarray(
            base.rotate(float(fine), resample=Image.Resampling.NEAREST, expand=False), dtype=np.float64
        )
        score = float(np.square(np.diff(rotated.sum(axis=1))).sum())
        if score > best_score:
            best, best_score = float(fine), score
    return round(best, 2)


def straighten(img: Image.Image) -> tuple[Image.Image, float]:
    angle = skew_angle(img)
    if abs(angle) < 0.1:
        return img, 0.0
    return img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255), angle


def crop_to_content(img: Image.Image, margin: int = 40) -> Image.Image:
    """Drop the dark border of a photo or scanner lid and the empty margins."""
    arr = np.asarray(img, dtype=np.uint8)
    # the paper: pixels lighter than the page's own background level, allowing for shading
    dark = arr < 110
    rows = np.where(dark.mean(axis=1) < 0.5)[0]
    cols = np.where(dark.mean(axis=0) < 0.5)[0]
    if rows.size == 0 or cols.size == 0:
        return img
    top, bottom = max(0, int(rows[0]) - 0), min(arr.shape[0], int(rows[-1]) + 1)
    left, right = max(0, int(cols[0]) - 0), min(arr.shape[1], int(cols[-1]) + 1)
    if (bottom - top) < arr.shape[0] * 0.5 or (right - left) < arr.shape[1] * 0.5:
        return img
    del margin
    return img.crop((left, top, right, bottom))
