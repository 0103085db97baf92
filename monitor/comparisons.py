"""Baseline and previous comparisons per site and side (docs/architecture.md, "Monitoring rules", fixed semantics).

A BMD change means something only when both scans come from one machine (or two machines
tied by a cross-calibration), cover the same bone, and exceed the least significant change.
Everything that fails those tests is still reported, with the reason, so QA can audit it; it
just never yields a number a clinician could misread as a change.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from monitor.config import MonitoringConfig, is_lumbar_range
from monitor.identity import (
    DIFFERENT_MANUFACTURERS,
    DIFFERENT_MODELS,
    DIFFERENT_SERIALS,
    MISSING_SERIAL,
    same_machine,
    same_model,
    why_different,
)
from monitor.model import (
    Comparison,
    ComparisonStatus,
    CrossCalibration,
    Exam,
    LscSource,
    Machine,
    Measurement,
    Phrase,
    Reference,
    Significance,
    SiteLsc,
    VendorLsc,
)
from monitor.phrases import english, english_all

_L = TypeVar("_L", SiteLsc, VendorLsc)
_WHY_CODES = {
    DIFFERENT_MANUFACTURERS: "different_manufacturers",
    DIFFERENT_MODELS: "different_models",
    DIFFERENT_SERIALS: "different_serials",
}

SPINE = "spine"
#: Sites that are trended besides the analysed lumbar range (docs/architecture.md, "Monitoring rules").
MONITORED_SITES = ("femoral_neck", "total_hip", "radius_33")
_TRACK_ORDER = {SPINE: 0, "femoral_neck": 1, "total_hip": 2, "radius_33": 3}
_SIDE_ORDER = {None: 0, "left": 1, "right": 2, "mean": 3}
#: Float slack so a delta exactly equal to the LSC counts as significant.
TOLERANCE = 1e-9


def percent_change(reference_bmd: float, new_bmd: float) -> float:
    """100 × (new − ref) / ref, unrounded."""
    if reference_bmd <= 0:
        raise ValueError(f"reference BMD must be positive, got {reference_bmd!r}")
    return 100.0 * (new_bmd - reference_bmd) / reference_bmd


def significance_of(delta: float, lsc: float) -> Significance:
    if delta >= lsc - TOLERANCE:
        return "gain"
    if delta <= -lsc + TOLERANCE:
        return "loss"
    return "stable"


def lumbar_ranges(exam: Exam) -> list[str]:
    return [m.site for m in exam.measurements if is_lumbar_range(m.site)]


def analysed_vertebral_set(exam: Exam) -> str | None:
    """The lumbar range that is monitored: the one the source named, else the widest measured.

    GE prints every sub-range (L1-L2 … L3-L4) beside L1-L4; the analysed set is the widest
    one (L1-L4, or L2-L4 on a Norland that does not scan L1). A single vertebra never counts.
    """
    ranges = lumbar_ranges(exam)
    if exam.vertebral_set and exam.vertebral_set in ranges:
        return exam.vertebral_set
    if not ranges:
        return None

    def span(site: str) -> tuple[int, int]:
        a, b = (int(part[1:]) for part in site.split("-"))
        return (b - a, -a)

    return max(ranges, key=span)


def _measurement(exam: Exam, site: str, side: str | None) -> Measurement | None:
    for m in exam.measurements:
        if m.site == site and m.side == side:
            return m
    return None


def _tracks(exams: Sequence[Exam], spines: Sequence[str | None]) -> list[tuple[str, str | None]]:
    """(site family, side) pairs present in any exam, in display order; `spines`: each exam's
    `analysed_vertebral_set`."""
    found: set[tuple[str, str | None]] = set()
    for exam, spine in zip(exams, spines, strict=True):
        if spine is not None:
            found.add((SPINE, None))
        for m in exam.measurements:
            if m.site in MONITORED_SITES and m.side in ("left", "right", "mean"):
                found.add((m.site, m.side))
    return sorted(found, key=lambda t: (_TRACK_ORDER[t[0]], _SIDE_ORDER.get(t[1], 9)))


def _track_value(exam: Exam, spine: str | None, track: tuple[str, str | None]) -> Measurement | None:
    family, side = track
    if family == SPINE:
        return None if spine is None else _measurement(exam, spine, None)
    return _measurement(exam, family, side)


def _site_matches(wanted: str, available: str) -> bool:
    return wanted == available or (available == SPINE and is_lumbar_range(wanted))


def find_site_lsc(lscs: Sequence[_L], machine_exam: Exam, site: str) -> _L | None:
    """The precision-study LSC of this exam's machine at this site (exact site before "spine")."""
    candidates = [s for s in lscs if same_machine(s.machine, machine_exam.machine)]
    for s in candidates:
        if s.site == site:
            return s
    for s in candidates:
        if _site_matches(site, s.site):
            return s
    return None


def find_crosscal(crosscals: Sequence[CrossCalibration], ref: Exam, new: Exam, site: str) -> CrossCalibration | None:
    """A calibration tying the two machines (either direction) that covers the site."""
    for cal in crosscals:
        pair = (same_machine(cal.machine_a, ref.machine) and same_machine(cal.machine_b, new.machine)) or (
            same_machine(cal.machine_b, ref.machine) and same_machine(cal.machine_a, new.machine)
        )
        if pair and any(_site_matches(site, s) for s in cal.sites):
            return cal
    return None


def _crosscal_lsc(cal: CrossCalibration, site: str) -> float | None:
    table = dict(cal.lsc_g_cm2)
    if site in table:
        return table[site]
    for key, value in table.items():
        if _site_matches(site, key):
            return value
    return None


def _convert_reference(cal: CrossCalibration, ref: Exam, site: str, bmd: float) -> float:
    """Reference BMD in the new machine's units. In-vivo records are new = slope × old + intercept,
    with machine_a the old (x) and machine_b the new (y); a return to the old machine inverts it."""
    if cal.kind != "in_vivo":
        return bmd
    known = {name for name, _, _ in cal.regressions}
    key = SPINE if site not in known and is_lumbar_range(site) and SPINE in known else site
    slope, intercept = cal.regression_for(key)
    if same_machine(cal.machine_a, ref.machine):
        return slope * bmd + intercept
    return (bmd - intercept) / slope


@lru_cache(maxsize=1024)  # a scan mode or protocol, asked for each pair of exams; few distinct
def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def dissimilarities(
    ref: Exam, ref_m: Measurement, new: Exam, new_m: Measurement, config: MonitoringConfig
) -> list[Phrase]:
    """Why two scans do not cover the same bone the same way (empty when they do).

    Scan mode, protocol and bone area are only compared on one model: across models (a
    cross-calibrated pair) they differ by construction and the calibration accounts for it.
    """
    reasons: list[Phrase] = []
    if ref_m.site != new_m.site:
        reasons.append(Phrase.of("different_vertebral_set", before=ref_m.site, after=new_m.site))
    if same_model(ref.machine, new.machine):
        if ref.scan_mode and new.scan_mode and _norm(ref.scan_mode) != _norm(new.scan_mode):
            reasons.append(Phrase.of("different_scan_mode", before=ref.scan_mode, after=new.scan_mode))
        if (
            ref.analysis_protocol
            and new.analysis_protocol
            and _norm(ref.analysis_protocol) != _norm(new.analysis_protocol)
        ):
            reasons.append(Phrase.of("different_protocol", before=ref.analysis_protocol, after=new.analysis_protocol))
        if ref_m.area_cm2 and new_m.area_cm2 and ref_m.area_cm2 > 0:
            area_change = 100.0 * (new_m.area_cm2 - ref_m.area_cm2) / ref_m.area_cm2
            if abs(area_change) > config.max_area_change_percent + TOLERANCE:
                reasons.append(
                    Phrase.of("area_changed", change_pct=area_change, limit_pct=float(config.max_area_change_percent))
                )
    return reasons


@dataclass(frozen=True)
class _Pair:
    ref: Exam
    ref_m: Measurement
    new: Exam
    new_m: Measurement
    reference: Reference


def compare(
    pair_ref: Exam,
    ref_m: Measurement,
    new: Exam,
    new_m: Measurement,
    reference: Reference,
    lscs: Sequence[SiteLsc],
    crosscals: Sequence[CrossCalibration],
    config: MonitoringConfig,
    vendor_lscs: Sequence[VendorLsc] = (),
) -> Comparison:
    """One comparison of `new_m` against `ref_m`, with status, LSC and significance. The LSC is,
    in this order: the cross-calibration's (through one), the machine's precision study loaded
    here, the LSC the machine printed (in this exam's file, else on its other reports), the
    configured default."""
    ref = pair_ref
    site = new_m.site
    why = why_different(ref.machine, new.machine)
    cal: CrossCalibration | None = None
    status: ComparisonStatus = "ok"
    if why is not None:
        cal = None if why == MISSING_SERIAL else find_crosscal(crosscals, ref, new, site)
        if cal is None:
            if why == MISSING_SERIAL:
                refusal = Phrase.of("refused_unknown_machine", machine_a=ref.machine, machine_b=new.machine)
                status = "rejected_unknown_machine"
            else:
                refusal = Phrase.of(
                    "refused_cross_machine",
                    why=Phrase.of(_WHY_CODES[why]),
                    machine_a=ref.machine,
                    machine_b=new.machine,
                    site=site,
                )
                status = "rejected_cross_machine"
            return Comparison(
                site=site,
                side=new_m.side,
                from_exam=ref.exam_id,
                to_exam=new.exam_id,
                reference=reference,
                status=status,
                delta_g_cm2=None,
                percent_change=None,
                lsc_g_cm2=None,
                lsc_source=None,
                significance=None,
                dissimilar=False,
                reason=english(refusal),
                notes=(refusal,),
            )
        status = "ok_cross_calibrated"

    notes: list[Phrase] = []
    ref_bmd = ref_m.bmd
    lsc: float | None = None
    source: LscSource
    if cal is not None:
        ref_bmd = _convert_reference(cal, ref, site, ref_m.bmd)
        notes.append(Phrase.of(f"via_crosscal_{cal.kind}", machine_a=ref.machine, machine_b=new.machine))
        if cal.kind == "in_vivo":
            notes.append(Phrase.of("reference_converted", reference_g=ref_m.bmd, converted_g=ref_bmd))
        lsc = _crosscal_lsc(cal, site)
        source = "crosscal"
    if lsc is None:
        study = find_site_lsc(lscs, new, site)
        printed = None if cal is not None else vendor_lsc(ref, ref_m, new, new_m, vendor_lscs)
        if study is not None:
            lsc, source = study.lsc_g_cm2, "study"
        elif printed is not None:
            lsc, source = printed[0], "vendor"
            notes.append(Phrase.of("lsc_printed", lsc_g=printed[0], file=printed[1]))
        else:
            lsc, source = config.default_lsc_percent_for(site) / 100.0 * ref_bmd, "default"
        if cal is not None:
            notes.append(Phrase.of("crosscal_no_lsc", site=site, source=source))

    delta = new_m.bmd - ref_bmd
    pct = percent_change(ref_bmd, new_m.bmd)
    dissimilar = dissimilarities(ref, ref_m, new, new_m, config)
    if dissimilar:
        notes.insert(0, Phrase.of("dissimilar", reasons=tuple(dissimilar)))
    else:
        notes.extend(_vendor_disagreement(new_m, reference, significance_of(delta, lsc), source, lsc))
    return Comparison(
        site=site,
        side=new_m.side,
        from_exam=ref.exam_id,
        to_exam=new.exam_id,
        reference=reference,
        status=status,
        delta_g_cm2=round(delta, 3),
        percent_change=round(pct, 2),
        lsc_g_cm2=round(lsc, 4),
        lsc_source=source,
        significance=None if dissimilar else significance_of(delta, lsc),
        dissimilar=bool(dissimilar),
        reason=english_all(notes),
        notes=tuple(notes),
    )


def vendor_lsc(
    ref: Exam, ref_m: Measurement, new: Exam, new_m: Measurement, machine_lscs: Sequence[VendorLsc] = ()
) -> tuple[float, str] | None:
    """The LSC the machine printed, with the file it came from: the new exam's file first (the
    report that shows this change), else the reference's when both exams are on that machine,
    else what the machine printed on its other reports."""
    if new_m.vendor_lsc_g_cm2 is not None:
        return new_m.vendor_lsc_g_cm2, new_m.vendor_lsc_file or "unknown"
    if ref_m.vendor_lsc_g_cm2 is not None and same_machine(ref.machine, new.machine):
        return ref_m.vendor_lsc_g_cm2, ref_m.vendor_lsc_file or "unknown"
    found = find_site_lsc(machine_lscs, new, new_m.site) if same_machine(ref.machine, new.machine) else None
    if found is not None:
        return found.lsc_g_cm2, found.source_file or "unknown"
    return None


def _vendor_disagreement(
    new_m: Measurement, reference: Reference, ours: Significance, source: LscSource, lsc: float
) -> list[Phrase]:
    """Why our verdict differs from the "*" the vendor printed for this change, when it does."""
    printed = dict(new_m.vendor_significant).get(reference)
    if printed is None or printed == (ours != "stable"):
        return []
    theirs = "vendor_marks_significant" if printed else "vendor_marks_not_significant"
    if source == "vendor":
        why = Phrase.of("vendor_rounds")
    else:
        why = Phrase.of("our_lsc_differs", source=source, lsc_g=lsc)
    return [Phrase.of(theirs, why=why)]


def _ordered(exams: Sequence[Exam]) -> list[Exam]:
    return sorted(exams, key=lambda e: (e.date, e.exam_id))


def _pairs(ordered: Sequence[tuple[Exam, str | None]], track: tuple[str, str | None]) -> list[_Pair]:
    """`ordered`: the exams (`_ordered`) with their `analysed_vertebral_set`."""
    series = [(e, m) for e, spine in ordered if (m := _track_value(e, spine, track)) is not None]
    pairs: list[_Pair] = []
    for i in range(1, len(series)):
        new, new_m = series[i]
        prev = series[i - 1]
        base = next((s for s in series[:i] if same_machine(s[0].machine, new.machine)), series[0])
        references: tuple[tuple[Reference, tuple[Exam, Measurement]], ...] = (
            ("baseline", base),
            ("previous", prev),
        )
        for reference, (ref, ref_m) in references:
            if track[0] == SPINE and ref_m.site != new_m.site:
                # Same vertebrae when the reference exam measured them (GE prints every range).
                ref_m = _measurement(ref, new_m.site, None) or ref_m
            pairs.append(_Pair(ref, ref_m, new, new_m, reference))
    return pairs


def compare_history(
    exams: Sequence[Exam],
    lscs: Sequence[SiteLsc],
    crosscals: Sequence[CrossCalibration],
    config: MonitoringConfig,
    vendor_lscs: Sequence[VendorLsc] = (),
) -> tuple[Comparison, ...]:
    """Every baseline and previous comparison of a patient's history, in display order."""
    out: list[Comparison] = []
    # each exam's analysed range worked out once, not again for each track and pair
    ordered = [(e, analysed_vertebral_set(e)) for e in _ordered(exams)]
    # `compare` looks up the LSCs of the new exam's machine only: given those alone, it finds the
    # same ones (the same filter, the same order) without matching every machine's for each pair
    studies: dict[Machine, list[SiteLsc]] = {}
    printed: dict[Machine, list[VendorLsc]] = {}
    for exam, _ in ordered:
        if exam.machine not in studies:
            studies[exam.machine] = [s for s in lscs if same_machine(s.machine, exam.machine)]
            printed[exam.machine] = [v for v in vendor_lscs if same_machine(v.machine, exam.machine)]
    for track in _tracks([e for e, _ in ordered], [spine for _, spine in ordered]):
        for p in _pairs(ordered, track):
            machine = p.new.machine
            out.append(
                compare(
                    p.ref, p.ref_m, p.new, p.new_m, p.reference, studies[machine], crosscals, config, printed[machine]
                )
            )
    return tuple(out)


def headline_side(comparisons: Sequence[Comparison], site: str) -> str | None:
    """The hip side a dashboard should headline: the mean when both hips exist at both times."""
    sides = {c.side for c in comparisons if c.site == site}
    if "mean" in sides:
        return "mean"
    for side in ("left", "right"):
        if side in sides:
            return side
    return None
