"""Every mutant of every sample ends as a report or a typed ParseError, parsed in the real parse
child with its limits, and nothing the run logs at DEBUG holds a sample patient's name, ID, birth
date or accession number. `make soak` runs the same with 10 000+ mutants (bench/soak.py)."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

from ingest.errors import ParseError
from ingest.parse import ParseLimits, parse_file
from services.child import ChildFailed, ChildLimits, ReusableChild
from tests.hardening.conftest import leaks
from tests.hardening.mutants import Mutant, distinct_mutants, mutants, patient_strings, sample_files

PER_FAMILY = 200
LIMITS = ParseLimits(max_bytes=64 * 1024 * 1024, max_pdf_pages=40, today=date(2030, 1, 1))
CHILD = ChildLimits(timeout_s=30, memory_mb=1024)


def family_of(data: bytes) -> str:
    """Which parser a sample goes to (its format as parsed, or its refusal for negatives)."""
    try:
        fmt = parse_file(data, "x", LIMITS).format
    except ParseError as exc:
        return f"rejected:{exc.code}"
    return "pdf" if fmt.startswith("pdf") else fmt


def corpus(root: Path, per_family: int) -> dict[str, list[Mutant]]:
    files = [p for p in sample_files(root) if p.stat().st_size]
    families = {p.relative_to(root).as_posix(): family_of(p.read_bytes()) for p in files}
    by_family: dict[str, list[Mutant]] = defaultdict(list)
    for m in mutants(root, per_sample=per_family):
        fam = families[m.sample]
        fam = "rejected" if fam.startswith("rejected") else fam
        if len(by_family[fam]) < per_family:
            by_family[fam].append(m)
        if len(by_family) >= 5 and all(len(v) >= per_family for v in by_family.values()):
            break
    return by_family


def run_corpus(items: list[Mutant]) -> tuple[Counter[str], list[str], list[str]]:
    child = ReusableChild()
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    messages: list[str] = []
    try:
        for m in items:
            try:
                child.run(parse_file, (m.data, "mutant", LIMITS), CHILD)
                outcomes["report"] += 1
            except ParseError as exc:
                outcomes[exc.code] += 1
                messages.append(exc.message)
            except ChildFailed as exc:
                outcomes[f"child {exc.code}"] += 1
                failures.append(f"{m.label}: {exc.code}")
            except Exception as exc:  # the defect this test exists for
                outcomes[f"untyped {type(exc).__name__}"] += 1
                failures.append(f"{m.label}: {type(exc).__name__}")
    finally:
        child.close(kill=True)
    return outcomes, failures, messages


def test_mutants_end_as_report_or_typed_error_and_log_nothing_identifying(samples_root: Path, debug_log: Path) -> None:
    by_family = corpus(samples_root, PER_FAMILY)
    assert {"hologic_apex_dicom", "ge_enhanced_sr", "ge_imagecomments_xml", "pdf"} <= set(by_family)
    secrets = patient_strings(samples_root)
    assert len(secrets) > 50  # the truth files were read
    summary = {}
    for family, items in sorted(by_family.items()):
        assert len(items) >= min(PER_FAMILY, 100), family
        outcomes, failures, messages = run_corpus(items)
        summary[family] = outcomes
        assert not failures, f"{family}: {failures[:10]}"
        assert sum(outcomes.values()) == len(items)
        refused = sum(n for k, n in outcomes.items() if k != "report")
        assert refused > len(items) // 4, f"{family}: the mutants barely changed anything: {outcomes}"
        for message in messages:
            assert not leaks(message, secrets), f"{family}: a refusal quotes patient data: {message[:200]}"
    text = debug_log.read_text("utf-8") if debug_log.exists() else ""
    assert "withheld" in text, "library log records reach the boundary and are counted"
    found = leaks(text, secrets)
    lines = [line for line in text.splitlines() if leaks(line, set(found))]
    assert not found, f"patient data in the DEBUG log: {len(found)} values, e.g. {lines[:3]}"
    print({k: dict(v) for k, v in summary.items()})


def test_distinct_mutants_are_as_many_as_asked_and_all_different(samples_root: Path) -> None:
    """`make soak` asks for 10 000: every one a different input, none a sample unchanged (repeats of
    the plain stream, a cut at the same place or bits flipped back, are skipped, not counted)."""
    originals = {hashlib.sha256(p.read_bytes()).digest() for p in sample_files(samples_root)}
    files = [p for p in sample_files(samples_root) if p.stat().st_size]
    count = len(files) * 6 + 5  # not a multiple of the samples: the last round is cut short
    made = list(distinct_mutants(samples_root, count))
    digests = [hashlib.sha256(m.data).digest() for m in made]
    assert len(made) == count and len(set(digests)) == count
    assert not set(digests) & originals
    assert [m.label for m in made] == [m.label for m in distinct_mutants(samples_root, count)]  # deterministic


def test_the_leak_check_finds_ids_and_names_but_not_digits_inside_longer_numbers() -> None:
    secrets = {"8998910", "DOE^JANE", "1950-03-04"}
    assert leaks("patient 8998910 refused", secrets) == ["8998910"]
    assert leaks("id=8998910;", secrets) == ["8998910"]
    assert leaks("name doe^jane", secrets) == ["DOE^JANE"]
    assert leaks("born 1950-03-04", secrets) == ["1950-03-04"]
    assert leaks("succeeded in 0.0478478169989102s", secrets) == []
    assert leaks("took 18998910 ms, 21950-03-045", secrets) == []
