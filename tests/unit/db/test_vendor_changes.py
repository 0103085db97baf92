"""The vendor's printed change is kept with the dates of the exams it compared, so the patient
page shows it only beside our comparison of the very same two exams."""

from __future__ import annotations

from datetime import date

from db.reports import _vendor_changes
from ingest.report import DeviceIdentity, ParsedReport, PatientInfo, SiteMeasurement, VendorExtras, VendorHistoryRow


def test_vendor_change_keeps_the_reference_dates() -> None:
    day = date(2019, 8, 20)
    history = (
        VendorHistoryRow("L2-L4", None, date(2015, 8, 4), 0.906),
        VendorHistoryRow("L2-L4", None, date(2017, 8, 15), 0.886, change_vs_baseline_pct=-2.2),
        VendorHistoryRow("L2-L4", None, day, 0.855, change_vs_baseline_pct=-5.6, change_vs_previous_pct=-3.5),
        VendorHistoryRow("total_hip", "left", day, 0.7, change_vs_previous_pct=1.0),
    )
    report = ParsedReport(
        format="test",
        patient=PatientInfo(patient_id="x"),
        exam_date=day,
        device=DeviceIdentity("Norland", "XR-800", "3840"),
        scan_type="spine",
        measurements=(SiteMeasurement("L2-L4", None, 0.855),),
        extras=VendorExtras(history=history),
    )
    changes = _vendor_changes(report)
    assert changes[("L2-L4", None)] == {
        "baseline": -5.6,
        "previous": -3.5,
        "baseline_date": "2015-08-04",
        "previous_date": "2017-08-15",
    }
    # a printed change without the earlier rows cannot say what it compared against
    assert changes[("total_hip", "left")]["previous_date"] is None
