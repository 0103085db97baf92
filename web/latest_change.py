"""The patients list's "latest change": per primary site, the verdict of the latest comparison.

Not the latest *significant* change (an old gain would read as today's news) and never "none
beyond LSC" where nothing could be compared: a refused comparison reads "not comparable:
machine changed". The verdict is the latest exam's comparison against its baseline (against
the previous exam when there is no baseline comparison), always with its date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import ComparisonRow, Exam

FAMILY_ORDER = {"spine": 0, "total_hip": 1, "femoral_neck": 2, "radius_33": 3}
SIDE_ORDER = {"mean": 0, "left": 1, "right": 2, None: 3}


@dataclass(frozen=True)
class SiteChange:
    site: str
    side: str | None
    when: date
    reference: str
    status: str
    significance: str | None
    percent_change: float | None
    dissimilar: bool

    @property
    def family(self) -> str:
        return "spine" if self.site.startswith("L") else self.site

    @property
    def verdict(self) -> str:
        if self.status == "rejected_cross_machine":
            return "not comparable: machine changed"
        if self.status == "rejected_unknown_machine":
            return "not comparable: machine unknown"
        if self.dissimilar:
            return "not comparable: dissimilar scans"
        return self.significance or "not assessed"

    @property
    def tone(self) -> str:
        """The CSS class that supports (never replaces) the words."""
        if self.status.startswith("rejected") or self.dissimilar:
            return "status-refused"
        return f"sig-{self.significance}" if self.significance else "sig-stable"

    def as_json(self) -> dict[str, object]:
        return {
            "site": self.site,
            "side": self.side,
            "date": self.when.isoformat(),
            "reference": self.reference,
            "status": self.status,
            "verdict": self.verdict,
            "significance": self.significance,
            "percent_change": None if self.status.startswith("rejected") else self.percent_change,
        }


def latest_changes(session: Session, patient_ids: list[int]) -> dict[int, tuple[SiteChange, ...]]:
    """Per patient, one SiteChange per primary site (the headline side: the mean when present)."""
    if not patient_ids:
        return {}
    to_exam = aliased(Exam)
    rows = session.execute(
        select(
            ComparisonRow.patient_id,
            ComparisonRow.site,
            ComparisonRow.side,
            ComparisonRow.reference,
            ComparisonRow.status,
            ComparisonRow.significance,
            ComparisonRow.percent_change,
            ComparisonRow.dissimilar,
            to_exam.exam_date,
        )
        .join(to_exam, to_exam.id == ComparisonRow.to_exam_id)
        .where(ComparisonRow.patient_id.in_(patient_ids))
        .order_by(ComparisonRow.patient_id, ComparisonRow.position)
    ).all()
    best: dict[int, dict[str, SiteChange]] = {}
    for pk, site, side, reference, status, significance, pct, dissimilar, when in rows:
        change = SiteChange(site, side, when, reference, status, significance, pct, bool(dissimilar))
        family = change.family
        if family not in FAMILY_ORDER:
            continue
        current = best.setdefault(pk, {}).get(family)
        if current is None or _rank(change) < _rank(current):
            best[pk][family] = change
    return {
        pk: tuple(sorted(by_family.values(), key=lambda c: FAMILY_ORDER[c.family])) for pk, by_family in best.items()
    }


def _rank(c: SiteChange) -> tuple[int, int, int]:
    """Latest exam first, then the headline side, then baseline before previous."""
    return (-c.when.toordinal(), SIDE_ORDER.get(c.side, 9), 0 if c.reference == "baseline" else 1)
