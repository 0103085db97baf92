"""Small builders for the monitoring-core tests (plain data, no I/O)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from monitor.config import MonitoringConfig
from monitor.model import Exam, Machine, Measurement

REPO = Path(__file__).resolve().parents[3]
CONFIG_FILE = REPO / "settings" / "monitoring.toml"

HOLOGIC_A = Machine("HOLOGIC", "Horizon Ci", "301234M")
HOLOGIC_B = Machine("Hologic Inc.", "Horizon Ci", "305555M")
GE = Machine("GE Healthcare", "Lunar iDXA", "ME+200117")
NO_SERIAL = Machine("GE Healthcare", "Lunar iDXA", None)
PRIMUS = Machine("OsteoSys", "PRIMUS", "PRM15B0412")


def load_config() -> MonitoringConfig:
    return MonitoringConfig.from_toml(CONFIG_FILE.read_text(encoding="utf-8"))


def exam(
    exam_id: str,
    day: str,
    machine: Machine,
    *measurements: Measurement,
    scan_mode: str | None = None,
    analysis_protocol: str | None = None,
) -> Exam:
    return Exam(
        exam_id=exam_id,
        date=date.fromisoformat(day),
        machine=machine,
        measurements=tuple(measurements),
        scan_mode=scan_mode,
        analysis_protocol=analysis_protocol,
    )


def spine(bmd: float, site: str = "L1-L4", t: float | None = None, area: float | None = None) -> Measurement:
    return Measurement(site, None, bmd, t_score=t, area_cm2=area)


def hip(site: str, side: str, bmd: float, t: float | None = None, z: float | None = None) -> Measurement:
    return Measurement(site, side, bmd, t_score=t, z_score=z)
