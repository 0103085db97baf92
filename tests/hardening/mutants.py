"""Deterministic hostile files made from the shared samples: the same (sample, seed, index) always
gives the same bytes, so a failing mutant can be named and rebuilt.

Operators, each aimed at a way real files break or are made to break a reader:
- `bit_flip`: a few random bits anywhere (transfer errors, bad media);
- `truncate`: the file cut short (an interrupted copy);
- `chunk`: a run of bytes deleted, duplicated or overwritten with noise (a damaged block);
- `length`: a DICOM element length or a PDF `/Length`, `/Count`, xref offset or object number set to
  zero, odd, huge or negative (what makes readers loop, over-read or allocate without bound);
- `page`: PDF page-tree damage (`/Type /Page` renamed, `/Kids` and `/Contents` pointing nowhere,
  `endobj`/`stream` keywords removed);
- `nest`: a DICOM sequence opened with an undefined length over and over (deep nesting).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_NOT_SAMPLES = re.compile(r"(\.truth\.json|\.csv|\.md|MANIFEST\.json)$")
# An explicit-VR element header: group, element, two upper-case letters of a VR.
_VRS = b"AE|AS|AT|CS|DA|DS|DT|FL|FD|IS|LO|LT|OB|OD|OF|OL|OW|PN|SH|SL|SQ|SS|ST|TM|UC|UI|UL|UN|UR|US|UT"
_EXPLICIT_VR = re.compile(rb"[\x00-\xff]{4}(" + _VRS + rb")")
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_PDF_NUMBER = re.compile(rb"/(Length|Count|Size|Prev|First|N)\s+(\d+)|(\d+)\s+0\s+(obj|R)|startxref\s+(\d+)")
_PDF_PAGE_TOKENS = (
    b"/Type /Page",
    b"/Type/Page",
    b"/Kids",
    b"/Contents",
    b"endobj",
    b"stream",
    b"/Resources",
    b"/Font",
)
_HOSTILE_NUMBERS = (0, 1, 3, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF)


@dataclass(frozen=True)
class Mutant:
    sample: str  # the sample's path below the samples folder
    operator: str
    index: int
    data: bytes

    @property
    def label(self) -> str:
        return f"{self.sample}#{self.operator}{self.index}"


def sample_files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file() and not _NOT_SAMPLES.search(p.name)]


def is_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:1024]


def bit_flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    # Half the cuts fall in the last tenth, where results tables and trailers live.
    cut = rng.randrange(1, len(data)) if rng.random() < 0.5 else rng.randrange(len(data) * 9 // 10, len(data))
    return data[:cut]


def chunk(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    size = rng.randint(1, max(1, min(4096, len(data) // 8)))
    how = rng.choice(("delete", "duplicate", "noise"))
    if how == "delete":
        return data[:start] + data[start + size :]
    if how == "duplicate":
        return data[: start + size] + data[start : start + size] + data[start + size :]
    return data[:start] + rng.randbytes(size) + data[start + size :]


def _dicom_length(data: bytes, rng: random.Random) -> bytes:
    headers = [m for m in _EXPLICIT_VR.finditer(data, 132)]
    if not headers:
        return bit_flip(data, rng)
    out = bytearray(data)
    for m in rng.sample(headers, k=min(len(headers), rng.randint(1, 3))):
        vr, at = m.group(1), m.end()
        value = rng.choice((*_HOSTILE_NUMBERS, rng.randrange(1 << 32)))
        if vr in _LONG_VRS:
            out[at + 2 : at + 6] = struct.pack("<I", value & 0xFFFFFFFF)
        else:
            out[at : at + 2] = struct.pack("<H", value & 0xFFFF)
    return bytes(out)


def _pdf_length(data: bytes, rng: random.Random) -> bytes:
    found = list(_PDF_NUMBER.finditer(data))
    if not found:
        return bit_flip(data, rng)
    out = data
    for m in sorted(rng.sample(found, k=min(len(found), rng.randint(1, 3))), key=lambda m: -m.start()):
        group = next(g for g in (2, 3, 5) if m.group(g) is not None)
        new = rng.choice([b"0", b"-1", b"99999999999", b"2147483648", str(rng.randrange(1 << 20)).encode()])
        out = out[: m.start(group)] + new + out[m.end(group) :]
    return out


def length(data: bytes, rng: random.Random) -> bytes:
    return _pdf_length(data, rng) if is_pdf(data) else _dicom_length(data, rng)


def page(data: bytes, rng: random.Random) -> bytes:
    """PDF structure damage; for a DICOM file (which may carry a PDF inside) the same tokens are
    damaged where present, else bits are flipped."""
    present = [t for t in _PDF_PAGE_TOKENS if t in data]
    if not present:
        return bit_flip(data, rng)
    out = data
    for token in rng.sample(present, k=min(len(present), rng.randint(1, 2))):
        positions = [m.start() for m in re.finditer(re.escape(token), out)]
        pos = rng.choice(positions)
        replacement = rng.choice([b"", b"/Type /Pages", b"/Kids [9999 0 R]", b"/Contents 9999 0 R", b" " * len(token)])
        out = out[:pos] + replacement + out[pos + len(token) :]
    return out


def nest(data: bytes, rng: random.Random) -> bytes:
    """Deep nesting: an undefined-length sequence item repeated many times in the dataset."""
    if is_pdf(data):
        depth = rng.choice((64, 512, 4096))
        at = data.find(b"obj") + 3 if b"obj" in data else len(data) // 2
        return data[:at] + b"<<" * depth + b"[" * depth + data[at:]
    depth = rng.choice((64, 1000, 5000))
    sq = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"  # (0008,1115) SQ undefined length
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # item, undefined length
    at = rng.randrange(132, len(data)) if len(data) > 132 else len(data)
    return data[:at] + (sq + item) * depth + data[at:]


OPERATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bit_flip": bit_flip,
    "truncate": truncate,
    "chunk": chunk,
    "length": length,
    "page": page,
    "nest": nest,
}
# How often each operator is drawn (nesting is costly to parse and finds one kind of fault).
_WEIGHTS = {"bit_flip": 4, "truncate": 2, "chunk": 2, "length": 4, "page": 2, "nest": 1}


def mutate(sample: str, data: bytes, index: int, seed: int = 0) -> Mutant:
    rng = random.Random(f"{seed}:{sample}:{index}")
    name = rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()))[0]
    out = OPERATORS[name](data, rng) if data else data
    if out == data:  # an operator that found nothing to change: flip bits instead
        out = bit_flip(data, rng) if data else b"\x00"
    return Mutant(sample, name, index, out)


def mutants(
    root: Path, per_sample: int, seed: int = 0, *, where: Callable[[str], bool] | None = None
) -> Iterator[Mutant]:
    """`per_sample` mutants of every sample (optionally only those whose path passes `where`),
    interleaved so that any prefix covers every sample."""
    files = [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sample_files(root)]
    files = [(rel, data) for rel, data in files if data and (where is None or where(rel))]
    for index in range(per_sample):
        for rel, data in files:
            yield mutate(rel, data, index, seed)


def distinct_mutants(
    root: Path, count: int, seed: int = 0, *, where: Callable[[str], bool] | None = None
) -> Iterator[Mutant]:
    """Exactly `count` mutants (while the samples give any), no two with the same bytes and none
    equal to a sample: the interleaved stream of `mutants` with repeats skipped (a file cut at the
    same place twice, bits flipped back), so that N asked for are N different inputs tried."""
    files = [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sample_files(root)]
    files = [(rel, data) for rel, data in files if data and (where is None or where(rel))]
    seen = {hashlib.sha256(data).digest() for _, data in files}
    made = 0
    for index in itertools.count():
        if made >= count or not files:
            return
        fresh = 0
        for rel, data in files:
            mutant = mutate(rel, data, index, seed)
            digest = hashlib.sha256(mutant.data).digest()
            if digest in seen:
                continue
            seen.add(digest)
            fresh += 1
            yield mutant
            made += 1
            if made >= count:
                return
        if not fresh and index > 1000:  # samples too small to give more different bytes
            return


def patient_strings(root: Path) -> set[str]:
    """What must never appear in a log: every sample's patient names (whole and each part of four
    letters or more), IDs, birth dates (ISO and DICOM spelling) and accession numbers, from the
    truth files."""
    import json

    found: set[str] = set()
    for truth in root.rglob("*.truth.json"):
        doc = json.loads(truth.read_text("utf-8"))
        records = [doc, *doc.get("exams", [])] if isinstance(doc.get("exams"), list) else [doc]
        for rec in records:
            if not isinstance(rec, dict):
                continue
            name = rec.get("patient_name")
            if isinstance(name, str) and name.strip():
                found.add(name)
                found.update(part for part in re.split(r"[\^=\s,]+", name) if len(part) >= 4)
            for key in ("patient_id", "accession"):
                value = rec.get(key)
                if isinstance(value, str) and len(value.strip()) >= 5:
                    found.add(value.strip())
            birth = rec.get("birth_date")
            if isinstance(birth, str) and len(birth) == 10:
                found.update({birth, birth.replace("-", "")})
    return found
