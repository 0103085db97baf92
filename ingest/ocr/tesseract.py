"""Tesseract, the Debian package (`tesseract-ocr` with `-eng`, `-chi-sim`, `-osd`), run as a
subprocess per page: PNG bytes on stdin, TSV on stdout, so no file is written and every word
comes back with its box and confidence.

One thread (`OMP_THREAD_LIMIT=1`): the parse child is one of several on a host, and the
page-per-core figure in `bench/ocr.py` is what a deployment sizes from. `--psm 6` reads the page
as one block of text, which keeps a results row (label and values) on one line even when the
columns are far apart; the templates read rows as lines.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from PIL import Image

from ingest.errors import ParseError

_TIMEOUT_S = 40.0


class OcrUnavailable(ParseError):
    """The OCR engine is not installed on this host: a fault of the set-up, not of the file."""

    code = "ocr_unavailable"


@dataclass(frozen=True)
class Word:
    text: str
    confidence: float  # 0..100, Tesseract's word confidence
    box: tuple[int, int, int, int]  # left, top, right, bottom in the page image's pixels


@dataclass(frozen=True)
class Line:
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (
            min(w.box[0] for w in self.words),
            min(w.box[1] for w in self.words),
            max(w.box[2] for w in self.words),
            max(w.box[3] for w in self.words),
        )


def _binary() -> str:
    found = shutil.which("tesseract")
    if not found:
        raise OcrUnavailable("the OCR engine (tesseract) is not installed on this host; run `make system-deps`")
    return found


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TESSDATA_PREFIX")}
    env["OMP_THREAD_LIMIT"] = "1"
    return env


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", dpi=(300, 300))
    return out.getvalue()


def _run(args: list[str], data: bytes) -> str:
    try:
        done = subprocess.run(
            [_binary(), "stdin", "stdout", *args],
            input=data,
            capture_output=True,
            timeout=_TIMEOUT_S,
            env=_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ParseError("OCR of a page took too long; the image may not be a document") from None
    if done.returncode != 0:
        raise ParseError("the OCR engine could not read this image") from None
    return done.stdout.decode("utf-8", "replace")


_ROTATE = re.compile(r"Rotate:\s*(\d+)")
_CONF = re.compile(r"Orientation confidence:\s*([\d.]+)")
_SCRIPT = re.compile(r"Script:\s*(\w+)")


def orientation_and_script(img: Image.Image) -> tuple[int, str]:
    """Degrees to rotate the page clockwise to make it upright (0, 90, 180, 270) and the script
    it is printed in ("Latin", "Han"…), from Tesseract's orientation and script detection; no turn
    when it is unsure (a page with little text)."""
    small = img.copy()
    small.thumbnail((1600, 1600))
    try:
        out = _run(["--psm", "0", "-l", "osd"], _png(small))
    except ParseError:
        return 0, "Latin"
    rotate, conf, script = _ROTATE.search(out), _CONF.search(out), _SCRIPT.search(out)
    turn = int(rotate[1]) % 360 if rotate and conf and float(conf[1]) >= 2.0 else 0
    return turn, script[1] if script else "Latin"


def read_lines(img: Image.Image, languages: str) -> tuple[Line, ...]:
    """The page's text lines in reading order, each word with its box and confidence."""
    out = _run(["-l", languages, "--psm", "6", "-c", "preserve_interword_spaces=0", "tsv"], _png(img))
    grouped: dict[tuple[int, int, int], list[Word]] = {}
    for row in out.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) != 12 or cols[0] != "5":
            continue
        text = cols[11].strip()
        if not text:
            continue
        left, top, width, height = (int(c) for c in cols[6:10])
        key = (int(cols[2]), int(cols[3]), int(cols[4]))
        grouped.setdefault(key, []).append(
            Word(text, max(0.0, float(cols[10])), (left, top, left + width, top + height))
        )
    return tuple(Line(tuple(words)) for _, words in sorted(grouped.items()))
