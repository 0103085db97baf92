"""When the next DXA is due, from the drug class and the rule table (docs/architecture.md, "Monitoring rules").

Repeating a scan before the expected change can exceed the LSC only adds radiation and noise;
waiting too long misses treatment failure. The rule table in configuration holds the
intervals; this module decides which rule applies and from which date it counts. Two outcomes
are alerts rather than dates: denosumab stopped without a follow-on antiresorptive (rebound
vertebral fractures), and a significant loss while on treatment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from monitor.config import MonitoringConfig, ScheduleRule
from monitor.dates import add_months
from monitor.model import Alert, Comparison, Exam, NextScan, Phrase, SiteRef, Therapy
from monitor.phrases import english
from monitor.who import lowest_t

BISPHOSPHONATES = ("oral_bisphosphonate", "iv_bisphosphonate")
_CLASS_RULES = {
    "iv_bisphosphonate": "iv_bisphosphonate",
    "denosumab": "denosumab",
    "serm": "serm",
    "hrt": "hrt",
    "calcitonin": "calcitonin",
}
_COURSES = {"anabolic_pth": "anabolic_pth", "romosozumab": "romosozumab"}


@dataclass(frozen=True)
class RuleChoice:
    rule: ScheduleRule
    due: date | None
    therapy: Therapy | None


def in_effect(therapy: Therapy, day: date, config: MonitoringConfig) -> bool:
    """Started, and not stopped longer ago than the drug keeps acting (config `effect_months`)."""
    if therapy.start > day:
        return False
    if therapy.stop is None:
        return True
    return day <= add_months(therapy.stop, config.effect_months.get(therapy.drug_class, 0))


def _is_glucocorticoid_only(therapy: Therapy) -> bool:
    return therapy.drug_class == "none" and therapy.glucocorticoid


def current_therapy(therapies: Sequence[Therapy], day: date, config: MonitoringConfig) -> Therapy | None:
    """The therapy in effect on `day` (latest started), else the most recent one before it."""
    started = [t for t in therapies if t.start <= day and not _is_glucocorticoid_only(t)]
    if not started:
        return None
    active = [t for t in started if in_effect(t, day, config)]
    pool = active or started
    return max(pool, key=lambda t: (t.start, t.stop or date.max))


def glucocorticoid_in_effect(therapies: Sequence[Therapy], day: date) -> bool:
    return any(t.glucocorticoid and t.start <= day and (t.stop is None or day <= t.stop) for t in therapies)


def on_holiday(therapy: Therapy, day: date, config: MonitoringConfig) -> bool:
    """A drug holiday: said so, or a bisphosphonate stopped after a full course (ASBMR 2016)."""
    if therapy.drug_class == "drug_holiday":
        return True
    if therapy.drug_class not in BISPHOSPHONATES or therapy.stop is None or in_effect(therapy, day, config):
        return False
    years = (
        config.holiday_after_years_oral
        if therapy.drug_class == "oral_bisphosphonate"
        else config.holiday_after_years_iv
    )
    return add_months(therapy.start, round(years * 12)) <= therapy.stop


def _anchor(last_exam: date | None, since: date, rule: ScheduleRule) -> date | None:
    """Counted from `since` (start of therapy, holiday, course end) until an exam follows it."""
    if last_exam is None:
        return None
    if last_exam < since:
        return add_months(since, rule.interval_months)
    return add_months(last_exam, rule.interval_months)


def select_rule(
    as_of: date, exams: Sequence[Exam], therapies: Sequence[Therapy], config: MonitoringConfig
) -> RuleChoice:
    """The rule that applies on `as_of` given the exams up to then, and the due date it gives."""
    history = sorted((e for e in exams if e.date <= as_of), key=lambda e: (e.date, e.exam_id))
    last = history[-1].date if history else None
    therapy = current_therapy(therapies, as_of, config)
    choice: RuleChoice
    if therapy is None or therapy.drug_class == "none":
        found = lowest_t(history[-1]) if history else None
        rule_id = "untreated_high_t" if found is not None and found[0] > config.untreated_high_t_above else "untreated"
        rule = config.rule(rule_id)
        choice = RuleChoice(rule, add_months(last, rule.interval_months) if last else None, therapy)
    elif on_holiday(therapy, as_of, config):
        rule = config.rule("drug_holiday")
        since = therapy.start if therapy.drug_class == "drug_holiday" else therapy.stop or therapy.start
        choice = RuleChoice(rule, _anchor(last, since, rule), therapy)
    elif therapy.drug_class == "oral_bisphosphonate":
        first = last is None or last < therapy.start
        rule = config.rule("oral_bisphosphonate_first" if first else "oral_bisphosphonate")
        choice = RuleChoice(rule, _anchor(last, therapy.start, rule), therapy)
    elif therapy.drug_class in _COURSES:
        rule = config.rule(_COURSES[therapy.drug_class])
        course_end = add_months(therapy.start, rule.interval_months)
        if therapy.stop is not None:
            course_end = min(course_end, therapy.stop)
        if last is None:
            due = None
        elif last < course_end:
            due = course_end
        else:
            due = add_months(last, rule.interval_months)
        choice = RuleChoice(rule, due, therapy)
    elif therapy.drug_class in _CLASS_RULES:
        rule = config.rule(_CLASS_RULES[therapy.drug_class])
        choice = RuleChoice(rule, _anchor(last, therapy.start, rule), therapy)
    else:
        raise ValueError(f"unknown drug class {therapy.drug_class!r}")

    if glucocorticoid_in_effect(therapies, as_of) and last is not None:
        gc_rule = config.rule("glucocorticoid")
        gc_due = add_months(last, gc_rule.interval_months)
        if choice.due is None or gc_due < choice.due:
            choice = RuleChoice(gc_rule, gc_due, choice.therapy)
    return choice


def denosumab_alerts(therapies: Sequence[Therapy], today: date, config: MonitoringConfig) -> list[Alert]:
    """Denosumab stopped with no follow-on antiresorptive started within the window.

    A follow-on that did start, but late, is still an alert (the rebound may have begun), and it
    says so: a patient who received zoledronic acid is never told to start a bisphosphonate."""
    alerts: list[Alert] = []
    window = config.denosumab_followon_months
    for course in therapies:
        if course.drug_class != "denosumab" or course.stop is None or course.stop > today:
            continue
        deadline = add_months(course.stop, window)
        follow_ons = sorted(
            (t for t in therapies if t is not course and t.drug_class in config.denosumab_followon_classes),
            key=lambda t: t.start,
        )
        started = [t for t in follow_ons if t.start > course.start and t.start <= today]
        if any(t.start <= deadline for t in started):
            continue
        basis = f"denosumab stop {course.stop.isoformat()}"
        if started:
            late = started[0]
            basis += f"; follow-on {late.drug_class} {late.start.isoformat()}"
            phrase = Phrase.of(
                "denosumab_followon_late",
                stop_date=course.stop,
                agent=late.agent,
                start_date=late.start,
                days=(late.start - deadline).days,
                months=window,
            )
        elif today > deadline:
            phrase = Phrase.of("denosumab_no_followon", stop_date=course.stop, months=window)
        else:
            phrase = Phrase.of("denosumab_followon_due", stop_date=course.stop, deadline_date=deadline)
        alerts.append(_alert("denosumab_stopped", phrase, basis))
    return alerts


def _alert(code: str, phrase: Phrase, basis: str) -> Alert:
    return Alert(code, english(phrase), basis, phrase)


def _significant_losses(exams: Sequence[Exam], comparisons: Sequence[Comparison]) -> tuple[Exam, list[Comparison]]:
    latest = max(exams, key=lambda e: (e.date, e.exam_id))
    losses = [
        c
        for c in comparisons
        if c.to_exam == latest.exam_id
        and c.status in ("ok", "ok_cross_calibrated")
        and not c.dissimilar
        and c.significance == "loss"
    ]
    return latest, losses


def _changes(changes: Sequence[Comparison]) -> tuple[Phrase, ...]:
    """`L2-L4 -5.63 % vs baseline` per change; one entry when baseline and previous are the same exam.
    (The changes named are allowed comparisons, which always carry a percent change.)"""
    grouped: dict[tuple[str, str | None, str, float], list[str]] = {}
    for c in changes:
        grouped.setdefault((c.site, c.side, c.from_exam, c.percent_change or 0.0), []).append(c.reference)
    codes: dict[tuple[str, ...], str] = {("baseline",): "change_vs_baseline", ("previous",): "change_vs_previous"}
    return tuple(
        Phrase.of(codes.get(tuple(refs), "change_vs_both"), site=SiteRef(site, side), pct=pct)
        for (site, side, _, pct), refs in grouped.items()
    )


def _loss_text(losses: Sequence[Comparison]) -> str:
    return ", ".join(english(p) for p in _changes(losses))


def loss_alerts(
    exams: Sequence[Exam],
    comparisons: Sequence[Comparison],
    therapies: Sequence[Therapy],
    config: MonitoringConfig,
) -> list[Alert]:
    """A significant loss at the latest exam: while a therapy is in effect, on a drug holiday, or
    with no treatment recorded (a real loss is never left without a word)."""
    if not exams:
        return []
    latest, losses = _significant_losses(exams, comparisons)
    if not losses:
        return []
    sites = tuple(dict.fromkeys(SiteRef(c.site, c.side) for c in losses))
    basis = f"exam {latest.exam_id}: " + _loss_text(losses)
    therapy = current_therapy(therapies, latest.date, config)
    if therapy is None or therapy.drug_class == "none":
        return [_alert("loss_untreated", Phrase.of("loss_untreated", changes=_changes(losses)), basis)]
    if on_holiday(therapy, latest.date, config):
        return [_alert("loss_on_holiday", Phrase.of("loss_on_holiday", sites=sites), basis)]
    if not in_effect(therapy, latest.date, config):
        return []
    return [_alert("loss_on_treatment", Phrase.of("loss_on_treatment", agent=therapy.agent, sites=sites), basis)]


def early_scan_alerts(
    exams: Sequence[Exam],
    therapies: Sequence[Therapy],
    config: MonitoringConfig,
    comparisons: Sequence[Comparison] = (),
) -> list[Alert]:
    """The latest exam came sooner after the previous one than the rule in force allowed.

    The sentence follows the comparisons: when the change did exceed the LSC anyway, it says
    that the change is real, never that it is "unlikely to exceed the LSC"."""
    ordered = sorted(exams, key=lambda e: (e.date, e.exam_id))
    if len(ordered) < 2:
        return []
    latest, previous = ordered[-1], ordered[-2]
    choice = select_rule(latest.date, ordered[:-1], therapies, config)
    earliest = add_months(previous.date, choice.rule.min_interval_months)
    if latest.date >= earliest:
        return []
    facts: dict[str, date | int | str] = {
        "scan_date": latest.date,
        "months": choice.rule.min_interval_months,
        "previous_date": previous.date,
        "rule": choice.rule.id,
    }
    significant = [
        c
        for c in comparisons
        if c.to_exam == latest.exam_id
        and c.status in ("ok", "ok_cross_calibrated")
        and not c.dissimilar
        and c.significance in ("gain", "loss")
    ]
    if significant:
        phrase = Phrase.of("scan_too_early_real_change", changes=_changes(significant), **facts)
    else:
        phrase = Phrase.of("scan_too_early", **facts)
    return [_alert("scan_too_early", phrase, f"exam {latest.exam_id} after {previous.exam_id}")]


def next_scan(
    exams: Sequence[Exam],
    comparisons: Sequence[Comparison],
    therapies: Sequence[Therapy],
    config: MonitoringConfig,
    today: date,
) -> NextScan:
    alerts = [
        *denosumab_alerts(therapies, today, config),
        *loss_alerts(exams, comparisons, therapies, config),
        *early_scan_alerts(exams, therapies, config, comparisons),
    ]
    if not exams:
        return NextScan(None, None, "No DXA exam on record: a baseline scan is needed.", tuple(alerts))
    choice = select_rule(today, exams, therapies, config)
    return NextScan(choice.due, choice.rule.id, choice.rule.sentence, tuple(alerts))
