"""The core's sentences as phrases: the English of every phrase is the export's text, and a phrase
stored as plain data reads back the same (so the dashboard can word it in another language)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from monitor.comparisons import compare_history
from monitor.model import Machine, Phrase, SiteRef
from monitor.phrases import ENGLISH, english, english_all, from_data, to_data
from tests.unit.monitor.monitor_builders import GE, HOLOGIC_A, exam, load_config, spine

HOLOGIC = Machine("HOLOGIC", "Discovery SL", "45678")
NO_SERIAL = Machine("GE Healthcare", "Lunar Prodigy", None)
CONFIG = load_config()


def test_refusal_reads_as_the_export_wrote_it() -> None:
    refusal = Phrase.of(
        "refused_cross_machine",
        why=Phrase.of("different_models"),
        machine_a=HOLOGIC,
        machine_b=Machine("HOLOGIC", "Horizon W", "200457"),
        site="L1-L4",
    )
    assert english(refusal) == (
        "different models: HOLOGIC Discovery SL (S/N 45678) and HOLOGIC Horizon W (S/N 200457); "
        "no cross-calibration between them covers L1-L4"
    )


def test_lists_numbers_and_dates_in_english() -> None:
    changes = (
        Phrase.of("change_vs_both", site=SiteRef("L1-L4"), pct=-5.6349),
        Phrase.of("change_vs_baseline", site=SiteRef("total_hip", "left"), pct=4.2),
    )
    text = english(Phrase.of("loss_untreated", changes=changes))
    assert "(L1-L4 -5.63 % vs baseline and previous, total hip (left) +4.20 % vs baseline)" in text
    dissimilar = Phrase.of(
        "dissimilar",
        reasons=(
            Phrase.of("different_scan_mode", before="Array", after="Fast"),
            Phrase.of("area_changed", change_pct=3.14, limit_pct=2.0),
        ),
    )
    assert english(dissimilar) == (
        "dissimilar scans: different scan mode (Array then Fast); bone area changed by +3.1 % (limit 2 %)"
    )
    due = Phrase.of("denosumab_followon_due", stop_date=date(2018, 1, 31), deadline_date=date(2018, 7, 31))
    assert "on 2018-01-31" in english(due) and "by 2018-07-31" in english(due)
    assert english_all([]) is None


def test_comparisons_carry_their_reason_as_phrases() -> None:
    exams = [
        exam("1", "2016-01-12", GE, spine(0.858)),
        exam("2", "2018-02-06", HOLOGIC_A, spine(0.795)),
        exam("3", "2020-02-06", HOLOGIC_A, spine(0.760)),
    ]
    comparisons = compare_history(exams, [], [], CONFIG)
    refused = [c for c in comparisons if c.status == "rejected_cross_machine"]
    assert refused and all(c.notes[0].code == "refused_cross_machine" for c in refused)
    assert all(c.reason == english_all(c.notes) for c in comparisons)
    assert all(n.code in ENGLISH for c in comparisons for n in c.notes)


def test_stored_phrases_read_back_the_same() -> None:
    phrase = Phrase.of(
        "scan_too_early_real_change",
        scan_date=date(2019, 3, 1),
        months=12,
        previous_date=date(2018, 9, 3),
        rule="oral_bisphosphonate",
        changes=(Phrase.of("change_vs_previous", site=SiteRef("total_hip", "mean"), pct=-4.0),),
    )
    refused = Phrase.of("refused_unknown_machine", machine_a=HOLOGIC, machine_b=NO_SERIAL)
    for p in (phrase, refused, Phrase.of("lsc_printed", lsc_g=0.0281, file="a.dcm")):
        stored = json.loads(json.dumps(to_data(p)))
        assert from_data(stored) == p
        assert english(from_data(stored)) == english(p)


@pytest.mark.parametrize("data", [{"code": "x", "args": {"a": {"weird": 1}}}, {"code": "x", "args": {"a": True}}, {}])
def test_unknown_data_is_refused(data: dict[str, object]) -> None:
    with pytest.raises((KeyError, ValueError)):
        from_data(data)
