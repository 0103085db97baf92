"""Region labels in the context of a scan: "Total" is the total hip on a femur scan but the
total radius on a forearm scan, so the scan's region decides, never the label alone."""

from __future__ import annotations

import re
from typing import Literal

from ingest.errors import MalformedResults
from ingest.vocabulary import HIP_SITES, canonical_side, canonical_site, looks_like_site, lumbar_site

Region = Literal["spine", "hip", "dual_hip", "forearm", "total_body"]

_WORD = re.compile(r"[a-z]+")


def region_and_side(label: str) -> tuple[Region | None, str | None]:
    """'AP Spine' → spine; 'Left Femur' → (hip, left); 'DualFemur' → dual_hip;
    'x L.Forearm' / 'Left Forearm' → (forearm, left); 'Total Body' → total_body; 'Lateral Spine',
    'LVA' → None (not a monitored scan)."""
    text = label.lower()
    side = _side_word(text)
    if re.search(r"\blat(?:eral)?\b|\blva\b|\bvfa\b", text):
        return None, side  # a lateral spine's L2-L4 is not the AP L2-L4 we monitor
    if "dual" in text or "bilat" in text:
        return "dual_hip", "mean"
    if "spine" in text or "lumbar" in text:
        return "spine", None
    if "forearm" in text or "radius" in text or "wrist" in text:
        return "forearm", side
    if "femur" in text or "hip" in text:
        return "hip", side
    if "body" in text:
        return "total_body", None
    return None, side


def _side_word(text: str) -> str | None:
    if re.search(r"\bleft\b|\bl\.|\blt\b", text):
        return "left"
    if re.search(r"\bright\b|\br\.|\brt\b", text):
        return "right"
    return None


def site_in(label: str, region: Region | None) -> str | None:
    """The vocabulary site of a row label within its scan's region, or None (MID, Shaft, Ulna…)."""
    folded = " ".join(_WORD.findall(label.lower().replace("1/3", " onethird ").replace("33%", " onethird ")))
    if region == "spine":
        return lumbar_site(label)
    if region == "forearm":
        if folded in ("total", "radius total", "total radius"):
            return "radius_total"
        if "ulna" in folded or "both" in folded or folded in ("mid", "radius mid", "mid radius"):
            return None
        if "onethird" in folded:
            return "radius_33"
        site = canonical_site(label)
        return site if site in ("radius_33", "radius_ud", "radius_total") else None
    if region == "total_body":
        return "total_body" if folded in ("total", "total body", "whole body") else None
    site = canonical_site(label)
    if region in ("hip", "dual_hip"):
        return site if site in HIP_SITES else None
    return site


def split_side(label: str) -> tuple[str, str | None, bool]:
    """'Neck Left' → ('Neck', 'left', True); 'Total Mean' → ('Total', 'mean', True);
    'Neck Diff.' → ('Neck', None, True) (a side word that is no side); 'Neck' → ('Neck', None, False)."""
    words = label.strip().split()
    if len(words) >= 2:
        for idx in (len(words) - 1, 0):
            w = words[idx].strip(".|:").lower()
            rest = " ".join(words[:idx] + words[idx + 1 :])
            if w in ("diff", "difference", "delta"):
                return rest, None, True
            side = canonical_side(w) if w not in ("l", "r") else None
            if side:
                return rest, side, True
    return label.strip(), None, False


def refuse_unplaced(label: str, region: Region | None, vendor: str) -> None:
    """A results row with a BMD whose label names a site word that no synonym places in its scan
    ("Upper Neck", "Trochanteric Area"): skipping it could store fewer sites than the file holds,
    so the file is refused. Known non-sites (Diff., Shaft, MID, Ulna…) are skipped by the caller."""
    if region != "total_body" and looks_like_site(label):
        raise MalformedResults(
            f"{vendor}: a results row names a site in a way this layout is not known to print; "
            "fewer sites would be stored than the file holds"
        )
