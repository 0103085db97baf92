"""The patients list's "latest change": per primary site, the verdict of the latest comparison.

Not the latest *significant* change (an old gain would read as today's news) and never "none
beyond LSC" where nothing could be compared: a refused comparison reads "not comparable:
machine changed". The verdict is the latest exam's comparison against its baseline (against
the previous exam when there is no baseline comparison), always with its date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, bindparam, case, func, select
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
    """Per patient, one SiteChange per primary site (the headline side: the mean when present).

    The database picks each (patient, primary site) row (`_rank` as a window ordering), so a
    page of 50 patients followed for years sends 200 rows back rather than every comparison."""
    if not patient_ids:
        return {}
    rows = session.connection().execute(_LATEST, {"patient_ids": patient_ids}).all()
    best: dict[int, list[SiteChange]] = {}
    for pk, site, side, reference, status, significance, pct, dissimilar, when in rows:
        best.setdefault(pk, []).append(
            SiteChange(site, side, when, reference, status, significance, pct, bool(dissimilar))
        )
    return {pk: tuple(sorted(changes, key=lambda c: FAMILY_ORDER[c.family])) for pk, changes in best.items()}


def _latest_statement() -> Select[Any]:
    to_exam = aliased(Exam)
    family = case((func.substr(ComparisonRow.site, 1, 1) == "L", "spine"), else_=ComparisonRow.site)
    side_rank = case(
        *((ComparisonRow.side == side, rank) for side, rank in SIDE_ORDER.items() if side is not None),
        (ComparisonRow.side.is_(None), SIDE_ORDER[None]),
        else_=9,
    )
    reference_rank = case((ComparisonRow.reference == "baseline", 0), else_=1)
    ranked = (
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
            func.row_number()
            .over(
                partition_by=(ComparisonRow.patient_id, family),
                order_by=(to_exam.exam_date.desc(), side_rank, reference_rank, ComparisonRow.position),
            )
            .label("rank"),
        )
        .join(to_exam, to_exam.id == ComparisonRow.to_exam_id)
        .where(ComparisonRow.patient_id.in_(bindparam("patient_ids", expanding=True)), family.in_(FAMILY_ORDER))
        .subquery()
    )
    return select(*(c for c in ranked.c if c.name != "rank")).where(ranked.c.rank == 1)


_LATEST = _latest_statement()
