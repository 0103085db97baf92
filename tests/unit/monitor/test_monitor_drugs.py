from __future__ import annotations

from datetime import date

import pytest

from monitor.drugs import UnknownAgent, classify_agent, therapy_from_agent
from monitor.model import DRUG_CLASSES


@pytest.mark.parametrize(
    ("agent", "drug_class"),
    [
        ("alendronate", "oral_bisphosphonate"),
        ("  ALENDRONATE  ", "oral_bisphosphonate"),
        ("Fosamax 70 mg weekly", "oral_bisphosphonate"),
        ("阿仑膦酸钠", "oral_bisphosphonate"),
        ("阿仑膦酸钠片", "oral_bisphosphonate"),
        ("福善美", "oral_bisphosphonate"),
        ("risedronate", "oral_bisphosphonate"),
        ("Actonel", "oral_bisphosphonate"),
        ("利塞膦酸钠", "oral_bisphosphonate"),
        ("ibandronate", "oral_bisphosphonate"),
        ("Boniva 150 mg monthly", "oral_bisphosphonate"),
        ("伊班膦酸钠", "oral_bisphosphonate"),
        ("ibandronate IV", "iv_bisphosphonate"),
        ("Boniva injection 3 mg", "iv_bisphosphonate"),
        ("伊班膦酸钠注射液", "iv_bisphosphonate"),
        ("zoledronic acid", "iv_bisphosphonate"),
        ("Zoledronic  Acid", "iv_bisphosphonate"),
        ("Reclast", "iv_bisphosphonate"),
        ("Aclasta®", "iv_bisphosphonate"),
        ("唑来膦酸", "iv_bisphosphonate"),
        ("密固达", "iv_bisphosphonate"),
        ("denosumab", "denosumab"),
        ("Prolia", "denosumab"),
        ("地舒单抗", "denosumab"),
        ("地诺单抗", "denosumab"),
        ("普罗力", "denosumab"),
        ("teriparatide", "anabolic_pth"),
        ("Forteo", "anabolic_pth"),
        ("FORSTEO", "anabolic_pth"),
        ("特立帕肽", "anabolic_pth"),
        ("abaloparatide", "anabolic_pth"),
        ("Tymlos", "anabolic_pth"),
        ("阿巴洛肽", "anabolic_pth"),
        ("romosozumab", "romosozumab"),
        ("Evenity", "romosozumab"),
        ("罗莫佐单抗", "romosozumab"),
        ("raloxifene", "serm"),
        ("Evista", "serm"),
        ("雷洛昔芬", "serm"),
        ("bazedoxifene", "serm"),
        ("estradiol", "hrt"),
        ("HRT", "hrt"),
        ("激素替代", "hrt"),
        ("calcitonin", "calcitonin"),
        ("Miacalcin nasal spray", "calcitonin"),
        ("降钙素", "calcitonin"),
        ("鲑鱼降钙素", "calcitonin"),
        ("drug holiday", "drug_holiday"),
        ("Drug Holiday", "drug_holiday"),
        ("药物假期", "drug_holiday"),
        ("none", "none"),
        ("None", "none"),
    ],
)
def test_agent_to_class(agent: str, drug_class: str) -> None:
    found = classify_agent(agent)
    assert found.drug_class == drug_class
    assert found.drug_class in DRUG_CLASSES
    assert found.glucocorticoid is False


@pytest.mark.parametrize(
    ("agent", "drug_class"),
    [
        ("prednisone", "none"),
        ("Prednisolone 5 mg", "none"),
        ("泼尼松", "none"),
        ("methylprednisolone", "none"),
        ("alendronate + prednisone", "oral_bisphosphonate"),
    ],
)
def test_glucocorticoid_modifier(agent: str, drug_class: str) -> None:
    found = classify_agent(agent)
    assert found.glucocorticoid is True
    assert found.drug_class == drug_class


@pytest.mark.parametrize("agent", ["aspirin", "vitamin D", "xyz123", "", "   "])
def test_unknown_agent_is_an_error_naming_it(agent: str) -> None:
    with pytest.raises(UnknownAgent) as err:
        classify_agent(agent)
    assert isinstance(err.value, ValueError)
    assert repr(agent) in str(err.value)


def test_two_classes_in_one_entry_are_refused() -> None:
    with pytest.raises(UnknownAgent, match="more than one"):
        classify_agent("alendronate then denosumab")


def test_therapy_from_agent() -> None:
    therapy = therapy_from_agent(" Prolia ", date(2020, 1, 1), date(2021, 1, 1))
    assert (therapy.agent, therapy.drug_class, therapy.stop) == ("Prolia", "denosumab", date(2021, 1, 1))
    with pytest.raises(ValueError, match="before its start"):
        therapy_from_agent("Prolia", date(2021, 1, 1), date(2020, 1, 1))
