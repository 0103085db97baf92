"""Monitoring configuration as plain, validated data (thresholds and the repeat-scan rules).

The file (`settings/monitoring.toml`) is read by `settings.monitoring.load_monitoring_config`; the core only sees the
mapping, so it stays free of I/O. Validation is strict (unknown keys are errors) because a
mistyped threshold would otherwise silently fall back to a default and change clinical output.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from monitor.model import DRUG_CLASSES

#: Every rule id the scheduler can select; a configuration must define all of them.
RULE_IDS = (
    "untreated_high_t",
    "untreated",
    "oral_bisphosphonate_first",
    "oral_bisphosphonate",
    "iv_bisphosphonate",
    "denosumab",
    "anabolic_pth",
    "romosozumab",
    "serm",
    "hrt",
    "calcitonin",
    "drug_holiday",
    "glucocorticoid",
)


class ConfigError(ValueError):
    """The monitoring configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class ScheduleRule:
    id: str
    interval_months: int
    min_interval_months: int
    sentence: str


@dataclass(frozen=True)
class MonitoringConfig:
    rules: Mapping[str, ScheduleRule]
    max_area_change_percent: float = 2.0
    default_lsc_percent: Mapping[str, float] = field(default_factory=dict)
    min_degrees_of_freedom: int = 30
    lsc_multiplier: float = 2.77
    max_technologist_cv_percent: Mapping[str, float] = field(default_factory=dict)
    phantom_tolerance_percent: float = 1.0
    phantom_min_scans: int = 10
    in_vivo_min_patients: int = 30
    in_vivo_recommended_patients: int = 100
    normal_min_t: float = -1.0
    osteoporosis_max_t: float = -2.5
    low_z: float = -2.0
    who_min_age_years: int = 50
    denosumab_followon_months: int = 6
    denosumab_followon_classes: frozenset[str] = frozenset({"oral_bisphosphonate", "iv_bisphosphonate", "denosumab"})
    holiday_after_years_oral: float = 5
    holiday_after_years_iv: float = 3
    untreated_high_t_above: float = -2.0
    effect_months: Mapping[str, int] = field(default_factory=dict)

    def rule(self, rule_id: str) -> ScheduleRule:
        return self.rules[rule_id]

    def default_lsc_percent_for(self, site: str) -> float:
        """The default LSC (percent of reference BMD) for a site; lumbar ranges use "spine"."""
        key = "spine" if is_lumbar_range(site) else site
        if key in self.default_lsc_percent:
            return self.default_lsc_percent[key]
        if "other" in self.default_lsc_percent:
            return self.default_lsc_percent["other"]
        raise ConfigError(f"default_lsc_percent: no value for site {site!r} and no 'other'")

    def max_cv_percent_for(self, site: str) -> float | None:
        key = "spine" if is_lumbar_range(site) else site
        return self.max_technologist_cv_percent.get(key)

    @classmethod
    def from_toml(cls, text: str) -> MonitoringConfig:
        """Parse TOML text (no file access here: the caller reads the file)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"monitoring configuration is not valid TOML: {exc}") from exc
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> MonitoringConfig:
        return _parse(data)


@lru_cache(maxsize=1024)  # asked for every measurement of every exam at each evaluation; few distinct sites
def is_lumbar_range(site: str) -> bool:
    """A contiguous lumbar range such as "L1-L4" (a single vertebra is not a range)."""
    parts = site.split("-")
    if len(parts) != 2:
        return False
    a, b = parts
    if not (a.startswith("L") and b.startswith("L") and a[1:].isdigit() and b[1:].isdigit()):
        return False
    return 1 <= int(a[1:]) < int(b[1:]) <= 5


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A site's override file on top of the defaults: tables merge key by key, rules by id."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        if key == "rules" and isinstance(value, list) and isinstance(base.get("rules"), list):
            by_id: dict[str, Any] = {str(r.get("id")): dict(r) for r in base["rules"] if isinstance(r, Mapping)}
            for rule in value:
                if not isinstance(rule, Mapping) or "id" not in rule:
                    raise ConfigError("rules: every overriding rule needs an 'id'")
                by_id[str(rule["id"])] = {**by_id.get(str(rule["id"]), {}), **rule}
            merged["rules"] = list(by_id.values())
        elif isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            merged[key] = merge(base[key], value)
        else:
            merged[key] = value
    return merged


# --- validation -----------------------------------------------------------------------------

_TOP_KEYS = {
    "schema",
    "comparison",
    "default_lsc_percent",
    "precision",
    "crosscal",
    "who",
    "schedule",
    "rules",
}


def _table(data: Mapping[str, Any], key: str, allowed: set[str]) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a table")
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(sorted(unknown))}")
    return value


def _number(table: Mapping[str, Any], key: str, where: str, default: float, *, positive: bool = False) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key}: must be a number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where}.{key}: must be positive, got {value!r}")
    return float(value)


def _int(table: Mapping[str, Any], key: str, where: str, default: int, *, minimum: int = 1) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key}: must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}.{key}: must be at least {minimum}, got {value!r}")
    return value


def _number_map(data: Mapping[str, Any], key: str) -> dict[str, float]:
    table = data.get(key, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{key}: must be a table")
    return {k: _number(table, k, key, 0.0, positive=True) for k in table}


def _parse(data: Mapping[str, Any]) -> MonitoringConfig:
    if not isinstance(data, Mapping):
        raise ConfigError("monitoring configuration must be a table")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(sorted(unknown))}")
    if data.get("schema", 1) != 1:
        raise ConfigError(f"schema: only version 1 is understood, got {data.get('schema')!r}")

    comparison = _table(data, "comparison", {"max_area_change_percent"})
    precision = _table(data, "precision", {"min_degrees_of_freedom", "lsc_multiplier", "max_technologist_cv_percent"})
    crosscal = _table(
        data,
        "crosscal",
        {
            "phantom_tolerance_percent",
            "phantom_min_scans",
            "in_vivo_min_patients",
            "in_vivo_recommended_patients",
        },
    )
    who = _table(data, "who", {"normal_min_t", "osteoporosis_max_t", "low_z", "min_age_years"})
    schedule = _table(
        data,
        "schedule",
        {
            "denosumab_followon_months",
            "denosumab_followon_classes",
            "holiday_after_years_oral",
            "holiday_after_years_iv",
            "untreated_high_t_above",
            "effect_months",
        },
    )

    default_lsc = _number_map(data, "default_lsc_percent")
    if "other" not in default_lsc:
        default_lsc.setdefault("other", 5.3)

    followon = schedule.get("denosumab_followon_classes", ["oral_bisphosphonate", "iv_bisphosphonate", "denosumab"])
    if not isinstance(followon, list) or not all(isinstance(c, str) for c in followon):
        raise ConfigError("schedule.denosumab_followon_classes: must be a list of drug classes")
    bad = [c for c in followon if c not in DRUG_CLASSES]
    if bad:
        raise ConfigError(f"schedule.denosumab_followon_classes: unknown drug class(es) {', '.join(bad)}")

    effect_table = schedule.get("effect_months", {})
    if not isinstance(effect_table, Mapping):
        raise ConfigError("schedule.effect_months: must be a table")
    effect = {k: _int(effect_table, k, "schedule.effect_months", 0, minimum=0) for k in effect_table}
    bad = [c for c in effect if c not in DRUG_CLASSES]
    if bad:
        raise ConfigError(f"schedule.effect_months: unknown drug class(es) {', '.join(bad)}")

    normal_min_t = _number(who, "normal_min_t", "who", -1.0)
    osteoporosis_max_t = _number(who, "osteoporosis_max_t", "who", -2.5)
    if osteoporosis_max_t >= normal_min_t:
        raise ConfigError("who: osteoporosis_max_t must be below normal_min_t")

    return MonitoringConfig(
        rules=_parse_rules(data.get("rules")),
        max_area_change_percent=_number(comparison, "max_area_change_percent", "comparison", 2.0, positive=True),
        default_lsc_percent=default_lsc,
        min_degrees_of_freedom=_int(precision, "min_degrees_of_freedom", "precision", 30),
        lsc_multiplier=_number(precision, "lsc_multiplier", "precision", 2.77, positive=True),
        max_technologist_cv_percent=_number_map(precision, "max_technologist_cv_percent"),
        phantom_tolerance_percent=_number(crosscal, "phantom_tolerance_percent", "crosscal", 1.0, positive=True),
        phantom_min_scans=_int(crosscal, "phantom_min_scans", "crosscal", 10, minimum=2),
        in_vivo_min_patients=_int(crosscal, "in_vivo_min_patients", "crosscal", 30, minimum=3),
        in_vivo_recommended_patients=_int(crosscal, "in_vivo_recommended_patients", "crosscal", 100, minimum=3),
        normal_min_t=normal_min_t,
        osteoporosis_max_t=osteoporosis_max_t,
        low_z=_number(who, "low_z", "who", -2.0),
        who_min_age_years=_int(who, "min_age_years", "who", 50, minimum=0),
        denosumab_followon_months=_int(schedule, "denosumab_followon_months", "schedule", 6),
        denosumab_followon_classes=frozenset(followon),
        holiday_after_years_oral=_number(schedule, "holiday_after_years_oral", "schedule", 5, positive=True),
        holiday_after_years_iv=_number(schedule, "holiday_after_years_iv", "schedule", 3, positive=True),
        untreated_high_t_above=_number(schedule, "untreated_high_t_above", "schedule", -2.0),
        effect_months=effect,
    )


def _parse_rules(raw: Any) -> dict[str, ScheduleRule]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("rules: the configuration needs the rule table ([[rules]] entries)")
    rules: dict[str, ScheduleRule] = {}
    for index, entry in enumerate(raw):
        where = f"rules[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(entry) - {"id", "interval_months", "min_interval_months", "sentence"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        rule_id = entry.get("id")
        if not isinstance(rule_id, str) or rule_id not in RULE_IDS:
            raise ConfigError(f"{where}.id: must be one of {', '.join(RULE_IDS)}, got {rule_id!r}")
        where = f"rules[{rule_id}]"
        if rule_id in rules:
            raise ConfigError(f"{where}: defined twice")
        for key in ("interval_months", "min_interval_months", "sentence"):
            if key not in entry:
                raise ConfigError(f"{where}.{key}: missing")
        interval = _int(entry, "interval_months", where, 0)
        minimum = _int(entry, "min_interval_months", where, 0, minimum=0)
        if minimum > interval:
            raise ConfigError(f"{where}.min_interval_months: larger than interval_months")
        sentence = entry["sentence"]
        if not isinstance(sentence, str) or not sentence.strip():
            raise ConfigError(f"{where}.sentence: must be a non-empty sentence for the clinician")
        rules[rule_id] = ScheduleRule(rule_id, interval, minimum, sentence.strip())
    missing = [r for r in RULE_IDS if r not in rules]
    if missing:
        raise ConfigError(f"rules: missing rule(s) {', '.join(missing)}")
    return rules
