"""Plain data the monitoring core takes and gives back (docs/architecture.md, "Vocabulary" and "Monitoring rules").

Nothing here knows about files, databases or the clock: callers build these from whatever
they store, and `today` is always passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal, Union

ComparisonStatus = Literal["ok", "ok_cross_calibrated", "rejected_cross_machine", "rejected_unknown_machine"]
Reference = Literal["baseline", "previous"]
Significance = Literal["gain", "loss", "stable"]
# "vendor": the LSC the machine printed in the file (a facility study entered on the scanner)
LscSource = Literal["study", "vendor", "default", "crosscal"]

DRUG_CLASSES = (
    "none",
    "oral_bisphosphonate",
    "iv_bisphosphonate",
    "denosumab",
    "anabolic_pth",
    "romosozumab",
    "serm",
    "hrt",
    "calcitonin",
    "drug_holiday",
)


@dataclass(frozen=True)
class Machine:
    """A densitometer as (manufacturer, model, serial). See `monitor.identity` for sameness."""

    manufacturer: str
    model: str
    serial: str | None

    def label(self) -> str:
        serial = f"S/N {self.serial}" if self.serial else "no serial"
        return f"{self.manufacturer} {self.model} ({serial})"


@dataclass(frozen=True)
class Measurement:
    site: str
    side: str | None
    bmd: float  # g/cm²
    t_score: float | None = None
    z_score: float | None = None
    area_cm2: float | None = None
    # The LSC the machine printed at this site in the file this value came from, and that file
    vendor_lsc_g_cm2: float | None = None
    vendor_lsc_file: str | None = None
    # The vendor's own verdict on this exam's change ("*" printed), by reference, when printed
    vendor_significant: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class Exam:
    """One visit on one machine: every file of that visit merged."""

    exam_id: str
    date: date
    machine: Machine
    measurements: tuple[Measurement, ...]
    scan_mode: str | None = None
    analysis_protocol: str | None = None
    # The analysed lumbar range ("L1-L4", "L2-L4" after excluding L1…) when the source says it;
    # None lets the monitor take the widest contiguous range measured.
    vertebral_set: str | None = None


@dataclass(frozen=True)
class SiteLsc:
    """A machine's least significant change at one site, from its precision study."""

    machine: Machine
    site: str
    lsc_g_cm2: float
    rms_sd_g_cm2: float


@dataclass(frozen=True)
class VendorLsc:
    """The LSC a machine printed on its reports at one site, and the file it was read from."""

    machine: Machine
    site: str
    lsc_g_cm2: float
    source_file: str | None = None


@dataclass(frozen=True)
class CrossCalibration:
    """A record that makes two machines comparable at some sites.

    `kind` is "phantom" (same model: accepted within tolerance, pooled LSC) or "in_vivo"
    (different models: regression new = slope × old + intercept, generalized LSC).
    `lsc_g_cm2` maps site -> the LSC to use for comparisons through this calibration.
    """

    machine_a: Machine
    machine_b: Machine
    kind: Literal["phantom", "in_vivo"]
    sites: frozenset[str]
    lsc_g_cm2: tuple[tuple[str, float], ...] = ()
    slope: float = 1.0
    intercept: float = 0.0
    performed_on: date | None = None
    # Per-site in-vivo regressions (site, slope, intercept) when one record covers several
    # sites; a site not listed uses `slope`/`intercept`.
    regressions: tuple[tuple[str, float, float], ...] = ()

    def regression_for(self, site: str) -> tuple[float, float]:
        for name, slope, intercept in self.regressions:
            if name == site:
                return slope, intercept
        return self.slope, self.intercept


@dataclass(frozen=True)
class SiteRef:
    """A monitoring site and side as an argument (the reader's language names it)."""

    site: str
    side: str | None = None

    def english(self) -> str:
        site = self.site.replace("_", " ")
        return f"{site} ({self.side})" if self.side else site


Arg = Union[str, int, float, date, Machine, SiteRef, "Phrase", tuple[Union[SiteRef, "Phrase"], ...]]


@dataclass(frozen=True)
class Phrase:
    """A sentence as a code (`monitor.phrases.ENGLISH`) and its arguments: the reader's language
    words it (`web.phrases`); the exports keep the English (`monitor.phrases.english`)."""

    code: str
    args: tuple[tuple[str, Arg], ...] = ()

    @classmethod
    def of(cls, code: str, **args: Arg) -> Phrase:
        return cls(code, tuple(args.items()))

    def arg(self, name: str) -> Arg:
        return dict(self.args)[name]


@dataclass(frozen=True)
class Comparison:
    """One pair of exams at one site and side, in the export shape of docs/architecture.md, "Exports"."""

    site: str
    side: str | None
    from_exam: str
    to_exam: str
    reference: Reference
    status: ComparisonStatus
    delta_g_cm2: float | None
    percent_change: float | None
    lsc_g_cm2: float | None
    lsc_source: LscSource | None
    significance: Significance | None
    dissimilar: bool
    reason: str | None
    # `reason` as phrases (the reader's language words them); `reason` is their English
    notes: tuple[Phrase, ...] = ()


@dataclass(frozen=True)
class Therapy:
    agent: str
    drug_class: str
    start: date
    stop: date | None = None
    glucocorticoid: bool = False


@dataclass(frozen=True)
class Alert:
    code: str  # e.g. "denosumab_stopped", "loss_on_treatment", "scan_too_early"
    message: str  # a sentence a clinician reads
    # The facts that raised it (exam ids, dates, sites): an acknowledged alert comes back only
    # when an evaluation raises it on other facts, i.e. when something new happened.
    basis: str = ""
    # `message` as a phrase (the reader's language words it); `message` is its English
    phrase: Phrase | None = None


@dataclass(frozen=True)
class NextScan:
    due: date | None
    rule_id: str | None
    reason: str
    alerts: tuple[Alert, ...] = ()


@dataclass(frozen=True)
class PatientEvaluation:
    comparisons: tuple[Comparison, ...]
    next_scan: NextScan
    who_category: str | None = None  # "normal", "low_bone_mass", "osteoporosis", "z_score_only"
    z_below_expected: bool = False
    alerts: tuple[Alert, ...] = field(default_factory=tuple)
