"""The machine's own LSC: a precision study loaded here first, then the LSC the machine printed
(in the exam's own file, else on its other reports), then the configured default."""

from __future__ import annotations

from dataclasses import replace

from monitor.comparisons import compare_history
from monitor.model import Measurement, SiteLsc, VendorLsc
from tests.unit.monitor.monitor_builders import GE, HOLOGIC_A, HOLOGIC_B, exam, load_config, spine

CONFIG = load_config()


def printed(m: Measurement, lsc: float, file: str = "7", **marks: bool) -> Measurement:
    return replace(m, vendor_lsc_g_cm2=lsc, vendor_lsc_file=file, vendor_significant=tuple(sorted(marks.items())))


def test_the_lsc_printed_in_the_new_exams_file_decides_when_no_study_is_loaded() -> None:
    # -4.4 % on the spine: stable at the default LSC (5.3 % of 0.795), a loss at the printed 0.022
    exams = [
        exam("1", "2019-05-14", HOLOGIC_A, spine(0.795)),
        exam("2", "2022-06-07", HOLOGIC_A, printed(spine(0.760), 0.022)),
    ]
    c = compare_history(exams, [], [], CONFIG)[0]
    assert (c.lsc_g_cm2, c.lsc_source, c.significance) == (0.022, "vendor", "loss")
    assert "file 7" in (c.reason or "")
    default = compare_history([exams[0], replace(exams[1], measurements=(spine(0.760),))], [], [], CONFIG)[0]
    assert (default.lsc_source, default.significance) == ("default", "stable")


def test_a_precision_study_loaded_here_comes_before_the_printed_lsc() -> None:
    exams = [
        exam("1", "2019-01-01", HOLOGIC_A, spine(0.795)),
        exam("2", "2021-01-01", HOLOGIC_A, printed(spine(0.760), 0.022)),
    ]
    c = compare_history(exams, [SiteLsc(HOLOGIC_A, "L1-L4", 0.040, 0.0144)], [], CONFIG)[0]
    assert (c.lsc_source, c.significance) == ("study", "stable")


def test_the_machine_lsc_printed_on_another_patients_report_applies_to_this_machine_only() -> None:
    exams = [exam("1", "2015-02-18", GE, spine(0.800)), exam("2", "2017-03-08", GE, spine(0.827))]
    mine = VendorLsc(GE, "L1-L4", 0.025, "31")
    c = compare_history(exams, [], [], CONFIG, [mine])[0]
    assert (c.lsc_g_cm2, c.lsc_source, c.significance) == (0.025, "vendor", "gain")
    other = VendorLsc(HOLOGIC_B, "L1-L4", 0.010, "32")
    assert compare_history(exams, [], [], CONFIG, [other])[0].lsc_source == "default"


def test_a_printed_lsc_never_crosses_machines() -> None:
    exams = [
        exam("1", "2015-01-01", HOLOGIC_B, printed(spine(0.800), 0.010)),
        exam("2", "2017-01-01", HOLOGIC_A, spine(0.790)),
    ]
    assert all(c.lsc_source != "vendor" for c in compare_history(exams, [], [], CONFIG))


def test_when_the_vendors_star_disagrees_the_comparison_says_why() -> None:
    new = printed(spine(0.790), 0.022, previous=True, baseline=True)  # vendor marks a change we call stable
    exams = [exam("1", "2019-01-01", HOLOGIC_A, spine(0.800)), exam("2", "2021-01-01", HOLOGIC_A, new)]
    for c in compare_history(exams, [], [], CONFIG):
        assert c.significance == "stable"
        assert "vendor's report marks this change significant" in (c.reason or "")
    agreeing = printed(spine(0.790), 0.022, previous=False)
    c = compare_history([exams[0], replace(exams[1], measurements=(agreeing,))], [], [], CONFIG)
    assert all("vendor's report" not in (x.reason or "") for x in c)
