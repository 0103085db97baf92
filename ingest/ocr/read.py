"""A scan in, a `ScanReading` out: what each page says, where on the page each value was read,
how sure the OCR engine was, and which self-checks it fails.

The OCR lines are handed to the text-PDF machinery unchanged (`ingest.pdf.split.find_segments`
and `ingest.pdf.engine.apply_template`): a layout stays one TOML file whether its report arrives
as text or as pixels. The engine's provenance ("pdf p2 line 14") then names the OCR line each
value came from, which gives the value's words, their boxes and their confidences.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ingest.errors import MalformedResults, ParseError
from ingest.ocr.checks import Failure, check_report, identity_failures, value_key
from ingest.ocr.images import (
    crop_to_content,
    decode_images,
    denoise,
    image_kind,
    noise_level,
    render_pdf_pages,
    straighten,
    to_target_dpi,
)
from ingest.ocr.tesseract import Line, Word, orientation_and_script, read_lines
from ingest.pdf.date_order import pages_date_order
from ingest.pdf.engine import apply_template
from ingest.pdf.rows import resolve_label
from ingest.pdf.split import check_pages, find_segments
from ingest.pdf.template import Template, builtin_templates
from ingest.pdf.text import PdfText
from ingest.report import ParsedReport
from ingest.vocabulary import _SITE_SYNONYMS, SIDED_SITES, parse_decimal

# Below this word confidence (Tesseract, 0–100) a value is shown as doubtful; bench/ocr.py
# measures that no wrong value stays above it without a failed check.
LOW_CONFIDENCE = 90.0
ENGINE = "tesseract"

_PROVENANCE = re.compile(r"^pdf p(\d+) line (\d+)$")
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
_NUMERIC = re.compile(r"^[-+]?\d+(?:[.,]\d+)?[%*#]*$")
_LEADING_MINUS = str.maketrans({"—": "-", "–": "-", "−": "-", "~": "-", "“": "-", "”": "-", '"': "-"})
_DIGIT_LOOKALIKES = str.maketrans({"O": "0", "o": "0", "l": "1", "I": "1", "S": "5"})
# A cell read as Latin letters or quotes (never CJK, which is text, not a misread cell)
_GARBLED_CELL = re.compile(r"^(?:[A-Za-z~“”\"'`^*.,;|=_]{2,}|[A-Za-z~“”\"'=_])$")
_UNIT_WORD = re.compile(r"^\(?(?:m?g/cm\S?|g|cm\S?|%|%/yr|kg|lb|ibs?|in|years?|cm)\)?[.,]?$", re.IGNORECASE)
# Letters a numeric cell is misread as, when the whole cell is such letters ("TT" for "77")
_CELL_LOOKALIKES = str.maketrans({"O": "0", "o": "0", "l": "1", "I": "1", "|": "1", "S": "5", "T": "7", "B": "8"})


@dataclass(frozen=True)
class ReadValue:
    """One value as read: `key` names it (`ingest.ocr.checks.value_key`, or "patient_id",
    "exam_date", "birth_date", "device_serial", "device_model", "name", "sex")."""

    key: str
    text: str
    confidence: float
    page: int  # 1-based page of the file
    box: tuple[int, int, int, int] | None
    crop_png: bytes = b""
    failed: tuple[str, ...] = ()  # messages of the checks it fails
    normalised: bool = False  # the OCR text was corrected (a dash read as a quote): never certain

    @property
    def doubtful(self) -> bool:
        return bool(self.failed) or self.normalised or self.confidence < LOW_CONFIDENCE


@dataclass(frozen=True)
class ScanReport:
    """One report found in the scan. `report` is what the template read (patient ID "" when it
    could not be read); `values` every value the reviewer confirms."""

    report: ParsedReport
    values: tuple[ReadValue, ...]
    first_page: int
    problems: tuple[str, ...] = ()
    # rows that name a site but whose values could not be read: (site, side, provenance)
    unread: tuple[tuple[str, str | None, str], ...] = ()

    @property
    def identity_readable(self) -> bool:
        return bool(self.report.patient.patient_id) and not any(v.key == "patient_id" and v.failed for v in self.values)


@dataclass(frozen=True)
class ScanReading:
    """The outcome of OCR of one file: its reports (possibly none) and what prevented more."""

    reports: tuple[ScanReport, ...]
    page_count: int
    problems: tuple[str, ...] = ()
    engine: str = ENGINE
    page_angles: tuple[float, ...] = field(default=())
    thumbnails: tuple[bytes, ...] = field(default=(), repr=False)  # each page, PNG, for the reviewer


def is_scan_candidate(data: bytes) -> bool:
    return image_kind(data) is not None


def _glued(a: Word, b: Word) -> bool:
    """Chinese print has no spaces: two words touching at a CJK glyph are one ("2016年03月18日",
    "病历号：4971"), but a wide gap is a space even there (a label, then its value column); Latin
    words are always apart ("腰椎 L1")."""
    if b.text[0] in ":：，；)）" and _CJK.match(a.text[-1]):
        return True  # "检查日期 :" is "检查日期:", as the templates spell it
    cjk = bool(_CJK.match(a.text[-1]) or _CJK.match(b.text[0]))
    height = max(a.box[3] - a.box[1], b.box[3] - b.box[1], 1)
    latin = (a.text[-1].isascii() and a.text[-1].isalpha()) or (b.text[0].isascii() and b.text[0].isalpha())
    return cjk and not latin and (b.box[0] - a.box[2]) < 0.8 * height


def _join(words: Sequence[Word]) -> str:
    """Words of a line as the text a PDF's text layer would give."""
    out = ""
    for i, w in enumerate(words):
        if i and not _glued(words[i - 1], w):
            out += " "
        out += w.text
    return out


def _clean_word(word: Word) -> tuple[Word, bool]:
    """Undo the OCR slips a numeric cell is prone to; report whether anything was changed."""
    text = word.text
    if len(text) >= 2 and text[0] in '—–−~“”"' and text[1].isdigit():
        fixed = text.translate(_LEADING_MINUS)
        return Word(fixed, word.confidence, word.box), text[0] not in "—–−"
    if any(c.isdigit() for c in text) and not _NUMERIC.match(text):
        fixed = text.translate(_DIGIT_LOOKALIKES)
        if _NUMERIC.match(fixed) and sum(c.isdigit() for c in text) >= 2:
            return Word(fixed, word.confidence, word.box), True
    return word, False


@dataclass
class _Page:
    image: Image.Image
    lines: list[Line]
    normalised: set[tuple[int, int]]  # (line, word) indexes changed by `_clean_word`
    angle: float
    blanked: set[int] = field(default_factory=set)  # lines with a cell read as an empty placeholder
    languages: str = "eng"


# Tried in this order on each page: English first (most reports, and the fastest model), then
# Simplified Chinese, which reads the Latin and the digits of a Chinese report too (with `+eng`
# Tesseract reads some CJK site labels as Latin gibberish). Tesseract's script detection is not
# used: on a noisy page it says "Latin" or "Cyrillic" for Chinese print.
LANGUAGES = ("eng", "chi_sim")


def _recognised(page: _Page, templates: Sequence[Template]) -> bool:
    """Whether a layout knows the page: all its markers, or all but one and its table heading."""
    text = "\n".join(_join(line.words) for line in page.lines)
    for template in templates:
        hits = sum(1 for marker in template.detect_all if marker.search(text))
        if hits == len(template.detect_all):
            return True
        if len(template.detect_all) >= 2 and hits >= len(template.detect_all) - 1 and template.table.start.search(text):
            return True
    return False


def _mean_confidence(page: _Page) -> float:
    words = [w.confidence for line in page.lines for w in line.words]
    return sum(words) / len(words) if words else 0.0


def _ocr_page(img: Image.Image, dpi: tuple[float, float] | None, templates: Sequence[Template]) -> _Page:
    """One page read: resampled, cleaned, straightened, read in each language until a layout
    knows it; turned upright first (Tesseract's orientation detection) only when no reading was
    recognised, which a page on its side or upside down never is."""
    img = crop_to_content(denoise(to_target_dpi(img, dpi), noisy=noise_level(img) >= 6.0))
    best: _Page | None = None
    for attempt in range(2):
        if attempt:
            turn, _script = orientation_and_script(img)
            if not turn:
                break
            img = img.rotate(-turn, expand=True, fillcolor=255)
        straight, angle = straighten(img)
        for languages in LANGUAGES:
            page = _ocr_prepared(straight, languages, angle)
            if _recognised(page, templates):
                return page
            if best is None or _mean_confidence(page) > _mean_confidence(best):
                best = page
    assert best is not None
    return best


_DASHES = re.compile(r"^[-~–—_.]+$")
_UNSIGNED = re.compile(r"^\d+[.,]\d+$")


def _dash_before(img: Image.Image, word: Word, previous: Word | None) -> bool:
    """A minus sign Tesseract left out: the first stroke at or just left of a number's box is short,
    thin and horizontal at mid-height ("-1.4" read "1.4" is the commonest OCR error in a T- or
    Z-score column). The value is then read with its sign and marked for the reviewer."""
    left, top, _, bottom = word.box
    height = bottom - top
    if height < 8:
        return False
    start = max(left - int(0.9 * height), previous.box[2] + 2 if previous else 0)
    ink: np.ndarray[Any, np.dtype[np.bool_]] = np.asarray(img.crop((start, top, left + height, bottom))) < 128
    columns: np.ndarray[Any, np.dtype[np.bool_]] = np.asarray(ink.any(axis=0))
    if not columns.any():
        return False
    first = int(np.argmax(columns))
    thin = max(2, height // 5)
    end, low, high = first, height, -1
    # the run of columns whose ink is one thin horizontal band (a dash), up to the first column
    # that is empty or taller (the digit it may touch)
    while end < len(columns) and columns[end]:
        rows = np.where(ink[:, end])[0]
        new_low, new_high = min(low, int(rows[0])), max(high, int(rows[-1]))
        if new_high - new_low + 1 > thin:
            break
        low, high, end = new_low, new_high, end + 1
    if end >= len(columns) or high < 0:
        return False
    mid = (low + high) / 2
    return bool(end - first >= max(3, height // 4) and 0.3 * height <= mid <= 0.8 * height)


def _merge_dashes(cells: list[tuple[Word, bool]]) -> list[tuple[Word, bool]]:
    """One printed "-----" placeholder is one cell, however many pieces Tesseract cut it into:
    touching runs of dashes are joined, so the row keeps one token per column. Each word carries
    whether it was corrected."""
    out: list[tuple[Word, bool]] = []
    for word, changed in cells:
        prev = out[-1][0] if out else None
        if prev is not None and _DASHES.match(prev.text) and _DASHES.match(word.text):
            height = max(prev.box[3] - prev.box[1], word.box[3] - word.box[1], 8)
            if word.box[0] - prev.box[2] < 1.5 * height:
                box = (prev.box[0], min(prev.box[1], word.box[1]), word.box[2], max(prev.box[3], word.box[3]))
                out[-1] = (Word("-", min(prev.confidence, word.confidence), box), out[-1][1] or changed)
                continue
        out.append((word, changed))
    return out


def _ocr_prepared(img: Image.Image, languages: str, angle: float) -> _Page:
    raw = read_lines(img, languages)
    lines: list[Line] = []
    normalised: set[tuple[int, int]] = set()
    blanked: set[int] = set()
    for li, line in enumerate(raw):
        words: list[tuple[Word, bool]] = []
        numbers_seen = 0
        for word in line.words:
            clean, changed = _clean_word(word)
            cell = numbers_seen >= 2 and not changed and not clean.text.endswith(":")
            if cell and len(clean.text) >= 2 and not clean.text.strip("OolI|STB"):
                # a whole cell of digit look-alikes among the row's values
                clean, changed = Word(clean.text.translate(_CELL_LOOKALIKES), clean.confidence, clean.box), True
            elif (
                numbers_seen >= 2
                and not changed
                and _GARBLED_CELL.match(clean.text)
                and not clean.text.endswith(":")
                and not _UNIT_WORD.match(clean.text)
            ):
                # a vendor's "-----" or "*****" placeholder read as letters ("eee", "“wees")
                clean, changed = Word("-", 0.0, clean.box), True
                blanked.add(li)
            numbers_seen += bool(_NUMERIC.match(clean.text))
            words.append((clean, changed))
        merged = _merge_dashes(words)
        for wi, (word, _) in enumerate(merged):
            previous = merged[wi - 1][0] if wi else None
            if numbers_seen >= 2 and _UNSIGNED.match(word.text) and _dash_before(img, word, previous):
                merged[wi] = (Word("-" + word.text, word.confidence, word.box), True)
            if merged[wi][1]:
                normalised.add((li, wi))
        lines.append(Line(tuple(word for word, _ in merged)))
    return _Page(img, lines, normalised, angle, blanked, languages)


def _crop(page: _Page, line: Line, box: tuple[int, int, int, int] | None) -> bytes:
    """The row a value was read from, the value boxed: what the reviewer compares the value with."""
    left, top, right, bottom = line.box
    pad = max(8, (bottom - top) // 2)
    area = (
        max(0, left - pad),
        max(0, top - pad),
        min(page.image.width, right + pad),
        min(page.image.height, bottom + pad),
    )
    crop = page.image.crop(area).convert("RGB")
    if box is not None:
        draw = ImageDraw.Draw(crop)
        b = (box[0] - area[0] - 3, box[1] - area[1] - 3, box[2] - area[0] + 3, box[3] - area[1] + 3)
        draw.rectangle(b, outline=(220, 30, 30), width=3)
    if crop.width > 1000:
        crop = crop.resize((1000, max(1, round(crop.height * 1000 / crop.width))), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    crop.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _numbers(line: Line) -> list[tuple[int, float]]:
    found = []
    for i, word in enumerate(line.words):
        if _NUMERIC.match(word.text):
            value = parse_decimal(word.text)
            if value is not None:
                found.append((i, value))
    return found


def _value(key: str, value: float | None, page_no: int, li: int, page: _Page, label_conf: float) -> ReadValue | None:
    if value is None:
        return None
    line = page.lines[li]
    hits = [i for i, v in _numbers(line) if abs(v - value) < 1e-9 or abs(v - value * 1000) < 1e-6]
    if not hits:
        return ReadValue(key, _fmt(value), 0.0, page_no, line.box, _crop(page, line, None))
    words = [line.words[i] for i in hits]
    conf = min([*(w.confidence for w in words), label_conf])
    normalised = any((li, i) in page.normalised for i in hits)
    return ReadValue(key, _fmt(value), conf, page_no, words[0].box, _crop(page, line, words[0].box), (), normalised)


def _fmt(value: float) -> str:
    return (
        f"{value:g}"
        if abs(value) >= 10
        else f"{value:.3f}".rstrip("0").rstrip(".")
        if "." in f"{value}"
        else str(value)
    )


def _text_value(key: str, text: str | None, pages: Sequence[_Page], first_page: int) -> ReadValue | None:
    """A printed field (ID, a date): the first line holding its text, and the words that hold it."""
    if not text:
        return None
    probe = text.replace(" ", "")
    for offset, page in enumerate(pages):
        for line in page.lines:
            joined = _join(line.words).replace(" ", "")
            if probe[:6] not in joined and probe not in joined:
                continue
            words = [w for w in line.words if w.text in text or text[:4] in w.text or w.text in probe]
            conf, box = _confidence_and_box(words or list(line.words))
            return ReadValue(key, text, conf, first_page + offset, box, _crop(page, line, box))
    return ReadValue(key, text, 0.0, first_page, None)


def _confidence_and_box(words: Sequence[Word]) -> tuple[float, tuple[int, int, int, int]]:
    """A value is as sure as its least sure word; its crop is the box around all of them."""
    box = (
        min(w.box[0] for w in words),
        min(w.box[1] for w in words),
        max(w.box[2] for w in words),
        max(w.box[3] for w in words),
    )
    return min(w.confidence for w in words), box


def _label_confidence(line: Line) -> float:
    label = []
    for word in line.words:
        if _NUMERIC.match(word.text):
            break
        label.append(word.confidence)
    return min(label) if label else 0.0


def _values_of(report: ParsedReport, pages: Sequence[_Page], first_page: int) -> list[ReadValue]:
    values: list[ReadValue] = []
    p = report.patient
    for key, text in (
        ("patient_id", p.patient_id),
        ("exam_date", None),
        ("birth_date", None),
        ("device_model", report.device.model),
        ("device_serial", report.device.serial),
    ):
        found = _text_value(key, text, pages, first_page)
        if found:
            values.append(found)
    for m in report.measurements:
        match = _PROVENANCE.match(m.provenance)
        if not match:
            continue
        page_no, line_no = int(match[1]), int(match[2])
        page = pages[page_no - first_page]
        line = page.lines[line_no - 1]
        label_conf = _label_confidence(line)
        for column, v in (("bmd", m.bmd), ("t", m.t_score), ("z", m.z_score), ("bmc", m.bmc_g), ("area", m.area_cm2)):
            read = _value(value_key(m, column), v, page_no, line_no - 1, page, label_conf)
            if read:
                values.append(read)
            elif column in ("t", "z") and line_no - 1 in page.blanked:
                # a cell of this row was unreadable and taken as empty: ask for it
                values.append(
                    ReadValue(
                        value_key(m, column),
                        "",
                        0.0,
                        page_no,
                        line.box,
                        _crop(page, line, None),
                        ("this cell could not be read",),
                        True,
                    )
                )
    return values


def _date_values(report: ParsedReport, template: Template, pages: Sequence[_Page], first_page: int) -> list[ReadValue]:
    """The exam and birth dates: the line their template field matched, its date words."""
    out: list[ReadValue] = []
    for key, when in (("exam_date", report.exam_date), ("birth_date", report.patient.birth_date)):
        if when is None:
            continue
        pattern = template.fields.get(key)
        found: ReadValue | None = None
        for offset, page in enumerate(pages):
            for line in page.lines:
                text = _join(line.words)
                match = pattern.search(text) if pattern else None
                if not match:
                    continue
                digits = [w for w in line.words if any(c.isdigit() for c in w.text) and w.text in match["v"] + match[0]]
                conf, box = _confidence_and_box(digits or list(line.words))
                found = ReadValue(key, when.isoformat(), conf, first_page + offset, box, _crop(page, line, box))
                break
            if found:
                break
        out.append(found or ReadValue(key, when.isoformat(), 0.0, first_page, None))
    return out


def _printed_ids(template: Template, pages: Sequence[_Page]) -> list[str]:
    pattern = template.fields.get("patient_id")
    if pattern is None:
        return []
    return [m["v"] for page in pages for m in pattern.finditer("\n".join(_join(line.words) for line in page.lines))]


def _mark(values: list[ReadValue], failures: Sequence[Failure]) -> tuple[ReadValue, ...]:
    by_key: dict[str, list[str]] = {}
    for failure in failures:
        for key in failure.keys:
            by_key.setdefault(key, []).append(failure.message)
    return tuple(replace(v, failed=tuple(by_key.get(v.key, ()))) for v in values)


def _distance(a: str, b: str) -> int:
    """Levenshtein distance (labels are a few glyphs long)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _cjk_labels(templates: Sequence[Template]) -> dict[str, tuple[Template, ...]]:
    """Every CJK row label a layout reads, with its side words in front ("左侧股骨颈")."""
    names = {k: v for k, v in _SITE_SYNONYMS.items() if _CJK.search(k)}
    labels: dict[str, tuple[Template, ...]] = {}
    for template in templates:
        own = {k: v for k, v in template.labels.items() if _CJK.search(k)} | names
        sides = [w for w, _ in template.side_words if _CJK.search(w)]
        lumbar = [f"腰椎L{i}" for i in range(1, 5)] + [f"腰椎L{i}-L{j}" for i in range(1, 5) for j in range(i + 1, 6)]
        own |= {name: name[2:] for name in lumbar}
        for name, site in own.items():
            sided = (side + name for side in sides) if site in SIDED_SITES else ()
            for full in (name, *sided):
                labels[full] = (*labels.get(full, ()), template)
    return labels


def _corrected_label(line: str, known: dict[str, tuple[Template, ...]], templates: Sequence[Template]) -> str | None:
    """A CJK row label close to exactly one label the layouts know ("左侧全偶" for "左侧全髋",
    "朋椎 L1" for "腰椎 L1"): the row's text with it corrected; None when there is nothing
    (certain) to do. The row's values are then never shown as certain."""
    tokens = line.split()
    first = next((i for i, t in enumerate(tokens) if _NUMERIC.match(t)), None)
    if not first:
        return None
    label = "".join(tokens[:first])
    if len(label) < 4 or not _CJK.search(label) or label in known:
        return None
    if any(resolve_label(" ".join(tokens[:first]), t) for t in templates):
        return None
    allowed = max(1, len(label) // 3)
    scored = sorted((_distance(label, k), k) for k in known if len(k) >= 4)
    if not scored or scored[0][0] > allowed or (len(scored) > 1 and scored[1][0] <= scored[0][0]):
        return None
    return " ".join([scored[0][1], *tokens[first:]])


def _relaxed(text: PdfText, templates: Sequence[Template]) -> tuple[Template, ...]:
    """OCR misreads a word here and there, so a page may miss one of a layout's markers: the one
    layout whose results table heading and all but one marker are found is taken, with the
    markers found. Its values are checked and confirmed by a person like every scan's."""
    full = "\n".join("\n".join(lines) for lines in text.pages)
    found = []
    for template in templates:
        hits = tuple(m for m in template.detect_all if m.search(full))
        partial = len(template.detect_all) >= 2 and len(hits) >= len(template.detect_all) - 1
        if partial and hits and template.table.start.search(full):
            found.append(replace(template, detect_all=hits, label_cache={}))
    return tuple(found) if len(found) == 1 else ()


def _thumbnail(img: Image.Image) -> bytes:
    small = img.copy()
    small.thumbnail((900, 1300))
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def read_pages(pages: Sequence[_Page], templates: Sequence[Template] | None = None) -> ScanReading:
    reading = _read_pages(pages, templates)
    return replace(reading, thumbnails=tuple(_thumbnail(p.image) for p in pages))


def _folded(pattern: re.Pattern[str]) -> re.Pattern[str]:
    return re.compile(pattern.pattern, pattern.flags | re.IGNORECASE)


_OCR_TEMPLATES: dict[int, tuple[Template, Template]] = {}


def for_ocr(template: Template) -> Template:
    """A layout as OCR reads it: column headings in any case (Tesseract reads "Z-score" as "z-score"
    as often as not). Everything else, and what the values are, stays the layout's."""
    cached = _OCR_TEMPLATES.get(id(template))
    if cached is not None and cached[0] is template:
        return cached[1]
    columns = tuple(replace(c, header=_folded(c.header)) if c.header else c for c in template.table.columns)
    made = replace(template, table=replace(template.table, columns=columns), label_cache={})
    if len(_OCR_TEMPLATES) > 64:
        _OCR_TEMPLATES.clear()
    _OCR_TEMPLATES[id(template)] = (template, made)
    return made


def _read_pages(pages: Sequence[_Page], templates: Sequence[Template] | None = None) -> ScanReading:
    chosen = tuple(for_ocr(t) for t in (builtin_templates() if templates is None else templates))
    known = _cjk_labels(chosen)
    page_lines: list[tuple[str, ...]] = []
    for page in pages:
        texts = []
        for li, line in enumerate(page.lines):
            line_text = _join(line.words)
            fixed = _corrected_label(line_text, known, chosen) if known else None
            if fixed is not None:
                line_text = fixed
                page.normalised |= {(li, wi) for wi in range(len(line.words))}
            texts.append(line_text)
        page_lines.append(tuple(texts))
    text = PdfText(pages=tuple(page_lines), source="ocr")
    angles = tuple(p.angle for p in pages)
    segments = find_segments(text, chosen)
    problems: list[str] = []
    if segments is None and (relaxed := _relaxed(text, chosen)):
        chosen = relaxed
        segments = find_segments(text, chosen)
        problems.append("the layout was recognised from part of its printed markers")
    if segments is None:
        return ScanReading((), len(pages), ("no known report layout was recognised in the scan",), page_angles=angles)
    reports: list[ScanReport] = []
    for segment in segments:
        seg_pages = pages[segment.first : segment.stop]
        try:
            report, skipped = _apply(segment.template, text, segment.first, segment.stop)
        except ParseError as exc:
            problems.append(f"pages {segment.first + 1}-{segment.stop}: {exc.message}")
            continue
        report, unreadable_id = _plausible_identity(report)
        failures = check_report(report)
        failures += identity_failures(_printed_ids(segment.template, seg_pages))
        report_problems: list[str] = []
        if report.patient.patient_id:
            try:
                order = pages_date_order(segment.template, segment.text(text).pages)
                check_pages(text, segment, report.patient.patient_id, chosen, order)
            except ParseError as exc:
                report_problems.append(exc.message)
                failures.append(Failure("identity", ("patient_id",), "pages name different patients"))
        else:
            report_problems.append("the patient ID could not be read: held until a person enters it")
        if unreadable_id:
            failures.append(Failure("identity", ("patient_id",), "the patient ID as read is not an identifier"))
        report_problems += skipped
        unread = _unread_rows(segment.template, text, segment.first, segment.stop, report)
        report_problems += [problem for problem, *_ in unread]
        values = _values_of(report, seg_pages, segment.first + 1)
        values = [v for v in values if v.key not in ("exam_date", "birth_date")]
        values += _date_values(report, segment.template, seg_pages, segment.first + 1)
        rows = []
        for _, site, side, page_index, line_index in unread:
            if not site or (side is None and site in SIDED_SITES):
                continue  # which site or side cannot be told: named in the problems only
            page = pages[page_index]
            line = page.lines[line_index]
            crop = _crop(page, line, None)
            rows.append((site, side, f"pdf p{page_index + 1} line {line_index + 1}"))
            for column in ("bmd", "t", "z"):
                key = f"{site}/{side or '-'}/{column}"
                values.append(ReadValue(key, "", 0.0, page_index + 1, line.box, crop, ("this row could not be read",)))
        reports.append(
            ScanReport(report, _mark(values, failures), segment.first + 1, tuple(report_problems), tuple(rows))
        )
    return ScanReading(tuple(reports), len(pages), tuple(problems), page_angles=angles)


_ROW_AT = re.compile(r"pdf p(\d+) line (\d+)")
_MAX_SKIPPED = 8


def _apply(template: Template, text: PdfText, first: int, stop: int) -> tuple[ParsedReport, list[str]]:
    """The template on a report's pages; a results row OCR garbled (a value read as letters, a
    label lost) is left out and named for the reviewer, where a text PDF would be refused whole:
    a person compares every value with the page before anything is stored."""
    pages = [list(lines) for lines in text.pages[first:stop]]
    skipped: list[str] = []
    while True:
        current = PdfText(pages=tuple(tuple(lines) for lines in pages), metadata=text.metadata, source=text.source)
        try:
            return apply_template(template, current, first_page=first + 1, identity_optional=True), skipped
        except MalformedResults as exc:
            where = _ROW_AT.search(exc.message)
            if where is None or len(skipped) >= _MAX_SKIPPED:
                raise
            page, line = int(where[1]) - first - 1, int(where[2]) - 1
            if not (0 <= page < len(pages) and 0 <= line < len(pages[page])) or not pages[page][line]:
                raise
            pages[page][line] = ""
            skipped.append(f"page {where[1]} line {where[2]} could not be read and was left out: {exc.message}")


def _unread_rows(
    template: Template, text: PdfText, first: int, stop: int, report: ParsedReport
) -> list[tuple[str, str, str | None, int, int]]:
    """Lines of the results table that name a site and carry numbers but gave no value (OCR garbled
    them past reading): named for the reviewer, never dropped without a word."""
    used = {m.provenance for m in report.measurements}
    read = {(m.site, m.side) for m in report.measurements}
    out: list[tuple[str, str, str | None, int, int]] = []
    for page_index in range(first, stop):
        lines = text.pages[page_index]
        start = next((i for i, line in enumerate(lines) if template.table.start.search(line)), None)
        if start is None:
            continue
        for index in range(start + 1, len(lines)):
            line = lines[index]
            if any(end.search(line) for end in template.table.end):
                break
            tokens = line.split()
            first_number = next((i for i, t in enumerate(tokens) if _NUMERIC.match(t)), None)
            if not first_number or sum(1 for t in tokens if _NUMERIC.match(t)) < 2:
                continue
            label = resolve_label(" ".join(tokens[:first_number]), template)
            where = f"pdf p{page_index + 1} line {index + 1}"
            if label is not None and label.site and where not in used and (label.site, label.side) not in read:
                problem = (
                    f"page {page_index + 1} line {index + 1}: the {label.site} row could not be read; "
                    "type its values from the page or reject the scan"
                )
                out.append((problem, label.site, label.side, page_index, index))
            elif label is None and len(tokens) - first_number >= 3 and "," not in " ".join(tokens[:first_number]):
                # values under a label no layout knows (a misread "L1-L4"); non-contiguous sets
                # such as "L1,L3" are not sites and are left out on purpose
                problem = (
                    f"page {page_index + 1} line {index + 1}: a results row whose site could not be read; "
                    "compare the page with the values below"
                )
                out.append((problem, "", None, page_index, index))
    return out


_ID_SHAPE = re.compile(r"^(?=.*\d)[A-Za-z0-9][A-Za-z0-9._/-]*$")


def _plausible_identity(report: ParsedReport) -> tuple[ParsedReport, bool]:
    """A patient ID as OCR read it must look like one (letters and digits, at least one digit): a
    label read in its place ("Patient ID: Ethnicity:" when the ID was folded over) is no identity."""
    pid = report.patient.patient_id
    if not pid or _ID_SHAPE.match(pid):
        return report, False
    return replace(report, patient=replace(report.patient, patient_id="")), True


def read_scan(data: bytes, max_pages: int) -> ScanReading:
    """OCR of an image file (PNG, JPEG, TIFF of any number of pages) or an image-only PDF."""
    frames = decode_images(data, max_pages) if image_kind(data) else render_pdf_pages(data, max_pages)
    templates = tuple(for_ocr(t) for t in builtin_templates())
    pages = [_ocr_page(img, dpi, templates) for img, dpi in frames]
    return read_pages(pages)
