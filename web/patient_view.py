"""What the patient page shows per monitoring site: one compact row per exam, read from the stored
evaluation (the same comparisons the export and the alerts come from), never recomputed here.

Each row answers the clinician's questions for one exam: which machine, what BMD, how much it
changed since the previous exam and since baseline (Δ g/cm² and %), against which LSC and where
that LSC came from, whether the change is beyond it, and which drug the patient was on. A row
whose comparison was refused shows why, never a number: the first exam on a new machine is a
new baseline, not "no change", and the vendor's printed percentage (computed by a scanner that
knew only its own exams) is shown only where it compares the very same two exams on one machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from monitor.comparisons import analysed_vertebral_set
from monitor.config import MonitoringConfig
from monitor.model import Exam as CoreExam
from monitor.model import Machine, Therapy
from monitor.model import Measurement as CoreMeasurement
from monitor.schedule import current_therapy, in_effect
from web.i18n import N_
from web.queries.patient import ComparisonView, ExamView, PatientDetail, TherapyView, site_label

PRIMARY_SITES = ("spine", "total_hip", "femoral_neck", "radius_33")
LSC_SOURCE_TEXT = {
    "study": (N_("machine's precision study"), N_("From this machine's precision study: 2.77 × RMS-SD (ISCD).")),
    "vendor": (
        N_("printed by the machine"),
        N_("The LSC the machine printed on its report (no local precision study)."),
    ),
    "default": (
        N_("configured default"),
        N_("No precision study and no printed LSC for this machine: the configured default percentage of the BMD."),
    ),
    "crosscal": (N_("cross-calibration"), N_("Generalized LSC of the cross-calibration between the two machines.")),
}


@dataclass(frozen=True)
class Change:
    """One comparison as a row shows it: numbers only when the comparison was allowed."""

    comparison: ComparisonView
    vendor_percent: float | None  # the scanner's own figure, only for the same two exams on one machine

    @property
    def refused(self) -> bool:
        return self.comparison.refused

    @property
    def verdict(self) -> str:
        c = self.comparison
        if c.status == "rejected_cross_machine":
            return N_("not comparable: machine changed")
        if c.status == "rejected_unknown_machine":
            return N_("not comparable: machine unknown")
        if c.dissimilar:
            return N_("not comparable: dissimilar scans")
        return c.significance or "—"


@dataclass(frozen=True)
class SideValue:
    side: str
    bmd: float
    previous: Change | None


@dataclass(frozen=True)
class ExamRow:
    exam_id: str
    date: date
    machine: str
    machine_index: int
    site: str  # the measured site (the analysed lumbar range for the spine)
    bmd: float
    t_score: float | None
    previous: Change | None
    baseline: Change | None
    drug: DrugAt
    first: bool  # the patient's first exam at this site
    new_baseline: bool  # first exam on another machine: its changes were refused, it starts a baseline
    sides: tuple[SideValue, ...] = ()  # left and right beside a dual-hip mean

    @property
    def lsc(self) -> ComparisonView | None:
        for change in (self.baseline, self.previous):
            if change and not change.refused and change.comparison.lsc_g_cm2 is not None:
                return change.comparison
        return None

    @property
    def dissimilar_reason(self) -> ComparisonView | None:
        """The comparison whose notes say why the scans differ (the template words them)."""
        for change in (self.previous, self.baseline):
            if change and change.comparison.dissimilar:
                return change.comparison
        return None

    @property
    def refusal_reason(self) -> ComparisonView | None:
        """The refused comparison whose notes say why (the template words them)."""
        for change in (self.baseline, self.previous):
            if change and change.refused:
                return change.comparison
        return None


@dataclass(frozen=True)
class SiteTable:
    family: str  # "spine", "total_hip", "femoral_neck", "radius_33"
    site: str
    side: str | None
    title: str
    rows: tuple[ExamRow, ...]

    @property
    def key(self) -> str:
        return f"{self.site}-{self.side or 'none'}"

    @property
    def latest(self) -> ExamRow | None:
        return self.rows[-1] if self.rows else None

    @property
    def refusal_reason(self) -> ComparisonView | None:
        """The first refused comparison of the table's rows, whose notes say why."""
        return next((r.refusal_reason for r in self.rows if r.refusal_reason), None)

    @property
    def lsc_sources(self) -> tuple[str, ...]:
        found = {r.lsc.lsc_source for r in self.rows if r.lsc is not None and r.lsc.lsc_source}
        return tuple(s for s in LSC_SOURCE_TEXT if s in found)


def _core_exam(exam: ExamView) -> CoreExam:
    measurements = tuple(CoreMeasurement(m.site, m.side, m.bmd) for m in exam.measurements)
    machine = Machine(exam.device.manufacturer, exam.device.model, exam.device.serial)
    return CoreExam(exam.exam_id, exam.date, machine, measurements)


def spine_set_in_use(exams: tuple[ExamView, ...]) -> str | None:
    """The analysed lumbar range of the latest exam that has one (the set the monitor compares)."""
    for exam in reversed(exams):
        found = analysed_vertebral_set(_core_exam(exam))
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class DrugAt:
    """The drug in effect on an exam day (the template words it in the user's language)."""

    agent: str | None  # None: no treatment recorded
    stopped: date | None = None  # stopped before the exam
    still_acting: bool = False  # stopped, but within the drug's effect period
    glucocorticoid: bool = False

    def __str__(self) -> str:
        suffix = " + glucocorticoid" if self.glucocorticoid and self.agent else ""
        if self.agent is None:
            return "glucocorticoid only" if self.glucocorticoid else "none recorded"
        if self.stopped is not None:
            when = f"stopped {self.stopped.isoformat()}" + (", still acting" if self.still_acting else "")
            return f"{self.agent} ({when}){suffix}"
        return f"{self.agent}{suffix}"


def drug_at(therapies: tuple[TherapyView, ...], day: date, config: MonitoringConfig) -> DrugAt:
    """The drug in effect on the exam day."""
    core = [Therapy(t.agent, t.drug_class, t.start, t.stop, t.glucocorticoid) for t in therapies]
    therapy = current_therapy(core, day, config)
    steroid = any(t.glucocorticoid and t.start <= day and (t.stop is None or day <= t.stop) for t in core)
    if therapy is None or therapy.drug_class == "none":
        return DrugAt(None, glucocorticoid=steroid)
    if therapy.stop is not None and therapy.stop < day:
        return DrugAt(therapy.agent, therapy.stop, in_effect(therapy, day, config), steroid)
    return DrugAt(therapy.agent, glucocorticoid=steroid)


def _vendor_for(comparison: ComparisonView, printed: float | None, printed_from: str | None) -> float | None:
    """The vendor's figure only where it compares the same two exams on one machine: our
    comparison was made on one machine (not refused, not through a cross-calibration) and the
    vendor's reference exam has the date of ours."""
    if printed is None or comparison.status != "ok" or comparison.dissimilar:
        return None
    if printed_from != comparison.from_date.isoformat():
        return None
    return printed


def _change(
    comparisons: dict[tuple[str, str | None, str, str], ComparisonView],
    exam: ExamView,
    site: str,
    side: str | None,
    reference: str,
) -> Change | None:
    c = comparisons.get((site, side, exam.exam_id, reference))
    if c is None:
        return None
    m = exam.measurement(site, side)
    printed = m.provenance.get("vendor_change_pct") if m is not None else None
    value = printed.get(reference) if isinstance(printed, dict) else None
    since = printed.get(f"{reference}_date") if isinstance(printed, dict) else None
    vendor = _vendor_for(c, float(value) if isinstance(value, int | float) else None, since)
    return Change(c, vendor)


def _tracks(detail: PatientDetail) -> list[tuple[str, str, str | None]]:
    """(family, site, side) tables: the spine set in use, each hip site's headline side (the mean
    when both hips were measured), and each measured side of the 1/3 radius."""
    present = {(m.site, m.side) for exam in detail.exams for m in exam.measurements}
    tracks: list[tuple[str, str, str | None]] = []
    spine = spine_set_in_use(detail.exams)
    if spine is not None:
        tracks.append(("spine", spine, None))
    for site in ("total_hip", "femoral_neck"):
        sides = {side for s, side in present if s == site and side}
        if "mean" in sides:
            tracks.append((site, site, "mean"))
        else:
            tracks.extend((site, site, side) for side in sorted(sides))
    tracks.extend(("radius_33", "radius_33", side) for s, side in sorted(present, key=str) if s == "radius_33")
    return tracks


def site_tables(detail: PatientDetail, config: MonitoringConfig) -> list[SiteTable]:
    comparisons = {(c.site, c.side, c.to_exam, c.reference): c for c in detail.comparisons}
    machine_order: dict[str, int] = {}
    for exam in detail.exams:
        machine_order.setdefault(exam.machine_key, len(machine_order))
    tables = []
    for family, site, side in _tracks(detail):
        rows: list[ExamRow] = []
        for exam in detail.exams:
            measured = site
            if family == "spine":
                measured = analysed_vertebral_set(_core_exam(exam)) or ""
            m = exam.measurement(measured, side)
            if m is None:
                continue
            baseline = _change(comparisons, exam, measured, side, "baseline")
            previous = _change(comparisons, exam, measured, side, "previous")
            sides: tuple[SideValue, ...] = ()
            if side == "mean":
                sides = tuple(
                    SideValue(s, sm.bmd, _change(comparisons, exam, site, s, "previous"))
                    for s in ("left", "right")
                    for sm in exam.measurements
                    if sm.site == site and sm.side == s
                )
            new_baseline = bool(
                rows
                and baseline is not None
                and baseline.comparison.status == "rejected_cross_machine"
                and rows[-1].machine_index != machine_order[exam.machine_key]
            )
            rows.append(
                ExamRow(
                    exam_id=exam.exam_id,
                    date=exam.date,
                    machine=exam.device.label,
                    machine_index=machine_order[exam.machine_key],
                    site=measured,
                    bmd=m.bmd,
                    t_score=m.t_score,
                    previous=previous,
                    baseline=baseline,
                    drug=drug_at(detail.therapies, exam.date, config),
                    first=not rows,
                    new_baseline=new_baseline,
                    sides=sides,
                )
            )
        if rows:
            title = "Lumbar spine " + site if family == "spine" else site_label(site, side)
            tables.append(SiteTable(family, site, side, title, tuple(rows)))
    return tables


def other_spine_sets(detail: PatientDetail) -> list[str]:
    """Lumbar ranges measured but not the set in use (GE prints every sub-range; an earlier
    analysis may have used another set): charted behind a disclosure, not headlined."""
    in_use = spine_set_in_use(detail.exams)
    ranges = {m.site for e in detail.exams for m in e.measurements if m.side is None and _is_range(m.site)}
    return sorted(r for r in ranges if r != in_use)


def _is_range(site: str) -> bool:
    parts = site.split("-")
    return len(parts) == 2 and all(len(p) == 2 and p[0] == "L" and p[1] in "12345" for p in parts)
