"""File moves: names never become paths, quarantine writes its reason, nothing is lost."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from services.files import (
    archive_path,
    claim_by_copy,
    claim_by_rename,
    display_name,
    quarantine_file,
    safe_extension,
    sha256_of,
)


def test_hostile_names_never_become_paths(tmp_path: Path) -> None:
    assert safe_extension("..%2f..%2fetc.dcm") == ".dcm"
    assert safe_extension("report.p/df") == ""
    assert safe_extension("x.verylongextension") == ""
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("a\x00b\nc.dcm") == "abc.dcm"
    hostile = tmp_path / "inbox" / "..%2f..%2fetc.dcm"
    hostile.parent.mkdir()
    hostile.write_bytes(b"DICM")
    claimed = claim_by_rename(hostile, tmp_path / "work")
    assert claimed.parent == tmp_path / "work"
    assert claimed.suffix == ".dcm" and ".." not in claimed.name
    assert not hostile.exists()


def test_copy_claim_leaves_the_original(tmp_path: Path) -> None:
    src = tmp_path / "old.pdf"
    src.write_bytes(b"%PDF-1.4 data")
    claimed = claim_by_copy(src, tmp_path / "work")
    assert src.exists() and claimed.read_bytes() == src.read_bytes()
    assert sha256_of(claimed) == sha256_of(src)


def test_archive_path_has_no_received_name(tmp_path: Path) -> None:
    path = archive_path(tmp_path, "ab" * 32, "SMITH^JANE spine.pdf", date(2024, 3, 9))
    assert path == tmp_path / "2024" / "03" / ("ab" * 32 + ".pdf")


def test_quarantine_writes_sidecar_with_reason(tmp_path: Path) -> None:
    work = tmp_path / "work" / "f.dcm"
    work.parent.mkdir()
    work.write_bytes(b"junk")
    dest = quarantine_file(work, tmp_path / "q", "Not DXA result!", {"sha256": "c" * 64, "reason": "no BMD"})
    assert dest.parent == tmp_path / "q" / "not_dxa_result"
    assert dest.read_bytes() == b"junk" and not work.exists()
    sidecar = json.loads(dest.with_name(dest.name + ".json").read_text())
    assert sidecar["reason"] == "no BMD"
