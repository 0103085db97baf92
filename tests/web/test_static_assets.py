"""Vendored assets: pinned, served by the app itself, and allowed by the strict CSP."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

VENDOR = Path(__file__).resolve().parents[2] / "web" / "static" / "vendor"


def _pinned() -> dict[str, str]:
    """file name -> sha256 from the vendor README's table."""
    table = (VENDOR / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", table, flags=re.MULTILINE))


def test_every_vendored_file_matches_its_pinned_hash() -> None:
    pinned = _pinned()
    files = sorted(p.name for p in VENDOR.iterdir() if p.name != "README.md")
    assert files and sorted(pinned) == files
    for name, digest in pinned.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_pages_load_htmx_from_this_origin_under_a_strict_csp(
    login: Callable[[str], TestClient], anon: TestClient
) -> None:
    page = login("clin").get("/patients")
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page.text)
    assert scripts == ["/static/vendor/htmx-2.0.11.min.js"]
    assert "<script>" not in page.text  # no inline script: the CSP would block it anyway
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # htmx must not keep page snapshots (patient data) in the browser's localStorage
    assert '"historyCacheSize": 0' in page.text
    asset = anon.get(scripts[0])
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
