from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from monitor.config import RULE_IDS, ConfigError, MonitoringConfig, merge
from tests.unit.monitor.monitor_builders import CONFIG_FILE, load_config


def raw() -> dict[str, Any]:
    return tomllib.loads(CONFIG_FILE.read_text(encoding="utf-8"))


def test_default_file_loads_with_every_rule() -> None:
    config = load_config()
    assert set(config.rules) == set(RULE_IDS)
    for rule in config.rules.values():
        assert rule.sentence.endswith(".")
        assert 0 <= rule.min_interval_months <= rule.interval_months


@pytest.mark.parametrize(
    ("rule_id", "interval"),
    [
        ("oral_bisphosphonate_first", 24),
        ("oral_bisphosphonate", 24),
        ("iv_bisphosphonate", 24),
        ("denosumab", 12),
        ("anabolic_pth", 24),
        ("romosozumab", 12),
        ("serm", 24),
        ("hrt", 24),
        ("drug_holiday", 24),
        ("glucocorticoid", 12),
        ("untreated_high_t", 60),
        ("untreated", 24),
    ],
)
def test_default_intervals(rule_id: str, interval: int) -> None:
    assert load_config().rule(rule_id).interval_months == interval


def test_default_thresholds() -> None:
    c = load_config()
    assert (c.max_area_change_percent, c.lsc_multiplier, c.min_degrees_of_freedom) == (2.0, 2.77, 30)
    assert (c.normal_min_t, c.osteoporosis_max_t, c.low_z) == (-1.0, -2.5, -2.0)
    assert (c.denosumab_followon_months, c.untreated_high_t_above) == (6, -2.0)
    assert c.default_lsc_percent_for("L2-L4") == 5.3
    assert c.default_lsc_percent_for("wards") == c.default_lsc_percent["other"]


def test_the_file_documents_a_source_for_every_rule() -> None:
    text = CONFIG_FILE.read_text(encoding="utf-8")
    blocks = text.split("[[rules]]")[1:]
    assert len(blocks) == len(RULE_IDS)
    assert all("# Source:" in block for block in blocks)


def _broken(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(raw())
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "word"),
    [
        (_broken(("comparison", "max_area_change_percent"), "two"), "max_area_change_percent"),
        (_broken(("comparison", "max_area_chnage_percent"), 2.0), "unknown"),
        (_broken(("rules", 0, "interval_months"), 0), "interval_months"),
        (_broken(("rules", 0, "min_interval_months"), 999), "min_interval_months"),
        (_broken(("rules", 0, "sentence"), " "), "sentence"),
        (_broken(("rules", 0, "id"), "nonsense"), "id"),
        (_broken(("who", "osteoporosis_max_t"), 0.0), "osteoporosis_max_t"),
        (_broken(("schedule", "denosumab_followon_classes"), ["vitamins"]), "vitamins"),
        (_broken(("typo_section",), {}), "typo_section"),
        (_broken(("precision", "lsc_multiplier"), -1), "lsc_multiplier"),
        ({**raw(), "rules": raw()["rules"][1:]}, "missing rule"),
        ({**raw(), "rules": [*raw()["rules"], raw()["rules"][0]]}, "twice"),
    ],
)
def test_invalid_configuration_names_the_key(data: dict[str, Any], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        MonitoringConfig.from_mapping(data)


def test_invalid_toml() -> None:
    with pytest.raises(ConfigError, match="TOML"):
        MonitoringConfig.from_toml("rules = [")


def test_override_merges_tables_and_rules_by_id() -> None:
    override = {
        "comparison": {"max_area_change_percent": 3.0},
        "rules": [{"id": "denosumab", "interval_months": 24}],
    }
    config = MonitoringConfig.from_mapping(merge(raw(), override))
    assert config.max_area_change_percent == 3.0
    assert config.rule("denosumab").interval_months == 24
    assert config.rule("denosumab").sentence == load_config().rule("denosumab").sentence
    assert config.rule("serm").interval_months == 24
