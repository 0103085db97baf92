"""What a parser returns: one vendor file reduced to the vocabulary of docs/architecture.md.

These types are the contract between every parser and the rest of the service. They hold
plain values only (no pydicom or pdfplumber objects), so a report can cross a process
boundary (pickled from the parsing child) and be stored without the parser's libraries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

IdentityStrength = Literal["serial", "weak"]


@dataclass(frozen=True)
class PatientInfo:
    """Who the file is about. Never logged: it is patient data."""

    patient_id: str
    issuer: str | None = None
    name: str | None = None
    birth_date: date | None = None
    sex: str | None = None  # "F", "M", "O" or None


@dataclass(frozen=True)
class DeviceIdentity:
    """The machine that measured, as (manufacturer, model, serial).

    The serial comes from DeviceSerialNumber, the model string ("Horizon Ci (S/N 301234M)") or
    a printed footer; it is never invented from a station name. Without it the identity is
    weak and no comparison may ever be made with this exam.
    """

    manufacturer: str
    model: str
    serial: str | None
    software_version: str | None = None

    @property
    def strength(self) -> IdentityStrength:
        return "serial" if self.serial else "weak"


@dataclass(frozen=True)
class SiteMeasurement:
    """One skeletal site's result in canonical units.

    `provenance` says where each value was read, so a QA auditor can check it against the
    vendor's own screen: an SR content path, a Hologic table/row/column, or a PDF page/line.
    """

    site: str  # docs/architecture.md, "Vocabulary" vocabulary: "L1-L4", "femoral_neck", "total_hip", "radius_33", ...
    side: str | None  # "left", "right", "mean" or None (spine, total body)
    bmd: float  # g/cm²
    t_score: float | None = None
    z_score: float | None = None
    bmc_g: float | None = None
    area_cm2: float | None = None
    provenance: str = ""


@dataclass(frozen=True)
class VendorHistoryRow:
    """A trend row the vendor printed (an earlier exam as the scanner saw it). Information only:
    these are not extra exams, but the monitor cross-checks its own changes against them."""

    site: str
    side: str | None
    date: date
    bmd: float | None
    change_vs_baseline_pct: float | None = None
    change_vs_previous_pct: float | None = None
    change_vs_baseline_g_cm2: float | None = None
    change_vs_previous_g_cm2: float | None = None
    significant_marker: bool = False  # the vendor's "*": change reached the vendor's LSC
    dissimilar_marker: bool = False  # the vendor's "#": scans not comparable (different scanner/analysis)
    # The "*" by reference when the printout says which change it marks (None: not printed there)
    significant_vs_baseline: bool | None = None
    significant_vs_previous: bool | None = None
    provenance: str = ""


@dataclass(frozen=True)
class VendorExtras:
    """What the vendor printed about change and precision, kept beside our own computation."""

    history: tuple[VendorHistoryRow, ...] = ()
    printed_lsc_g_cm2: tuple[tuple[str, float], ...] = ()  # (site, LSC) pairs as printed
    reference_database: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedReport:
    """One file's results. A file holds one exam (or part of one: a spine file, a hip file)."""

    format: str  # e.g. "hologic_apex_dicom", "ge_enhanced_sr", "ge_imagecomments_xml", "pdf_ge_encore"
    patient: PatientInfo
    exam_date: date
    device: DeviceIdentity
    scan_type: str  # "spine", "hip", "dual_hip", "forearm", "total_body" or "mixed"
    measurements: tuple[SiteMeasurement, ...]
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    accession: str | None = None
    scan_mode: str | None = None
    analysis_protocol: str | None = None  # analysis mode/protocol or analysis software version
    extras: VendorExtras = field(default_factory=VendorExtras)

    @property
    def vertebral_set(self) -> str | None:
        """The analysed lumbar range (e.g. "L1-L4"), the spine site that is monitored: the widest
        range reported, since vendors also print partial sums (L1-L2, L1-L3) beside it."""
        ranges = [m.site for m in self.measurements if m.site.startswith("L") and "-" in m.site]
        if not ranges:
            return None
        return max(ranges, key=lambda site: (int(site[4]) - int(site[1]), -int(site[1])))
