"""Agent names (English, Chinese, brands) -> docs/architecture.md, "Vocabulary" drug classes.

Therapy lists come from hand-typed CSVs and Chinese hospital systems: "Fosamax 70mg weekly",
"阿仑膦酸钠片", "Zoledronic  Acid". The repeat-scan rule depends on the class, so a name we do
not know is an error naming it rather than a silent "none".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from monitor.model import Therapy

GLUCOCORTICOID = "glucocorticoid"


class UnknownAgent(ValueError):
    """The agent text names no drug we know (or several classes at once)."""

    def __init__(self, agent: str, detail: str = "unknown osteoporosis agent") -> None:
        super().__init__(f"{detail}: {agent!r}")
        self.agent = agent
        self.detail = detail


@dataclass(frozen=True)
class AgentClass:
    drug_class: str  # docs/architecture.md, "Vocabulary" drug_class ("none" for a glucocorticoid alone)
    glucocorticoid: bool
    canonical: str  # e.g. "alendronate", "prednisone"


# canonical name -> (drug class, names and brands). Chinese names match as substrings
# (阿仑膦酸钠片 is still alendronate); Latin names match as whole words.
_AGENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "alendronate": (
        "oral_bisphosphonate",
        (
            "alendronate",
            "alendronic acid",
            "alendronate sodium",
            "fosamax",
            "fosavance",
            "binosto",
            "阿仑膦酸钠",
            "阿仑膦酸",
            "阿伦膦酸钠",
            "福善美",
            "福美加",
        ),
    ),
    "risedronate": (
        "oral_bisphosphonate",
        ("risedronate", "risedronic acid", "actonel", "atelvia", "利塞膦酸钠", "利塞膦酸"),
    ),
    "ibandronate": (
        "oral_bisphosphonate",
        ("ibandronate", "ibandronic acid", "boniva", "bonviva", "伊班膦酸钠", "伊班膦酸"),
    ),
    "zoledronic acid": (
        "iv_bisphosphonate",
        (
            "zoledronic acid",
            "zoledronate",
            "zoledronic",
            "reclast",
            "aclasta",
            "zometa",
            "唑来膦酸",
            "密固达",
            "择泰",
        ),
    ),
    "denosumab": ("denosumab", ("denosumab", "prolia", "xgeva", "地舒单抗", "地诺单抗", "普罗力", "安加维")),
    "teriparatide": (
        "anabolic_pth",
        ("teriparatide", "forteo", "forsteo", "terrosa", "movymia", "pth 1 34", "特立帕肽", "复泰奥"),
    ),
    "abaloparatide": ("anabolic_pth", ("abaloparatide", "tymlos", "eladynos", "阿巴洛肽")),
    "romosozumab": ("romosozumab", ("romosozumab", "evenity", "罗莫佐单抗", "罗莫珠单抗")),
    "raloxifene": ("serm", ("raloxifene", "evista", "雷洛昔芬", "易维特")),
    "bazedoxifene": ("serm", ("bazedoxifene", "conbriza", "duavee", "duavive", "巴多昔芬")),
    "hrt": (
        "hrt",
        (
            "estradiol",
            "oestradiol",
            "estrogen",
            "oestrogen",
            "conjugated estrogens",
            "premarin",
            "tibolone",
            "hrt",
            "hormone replacement",
            "hormone replacement therapy",
            "menopausal hormone therapy",
            "mht",
            "激素替代",
            "激素替代治疗",
            "雌二醇",
            "雌激素",
            "替勃龙",
        ),
    ),
    "calcitonin": (
        "calcitonin",
        (
            "calcitonin",
            "salmon calcitonin",
            "miacalcin",
            "miacalcic",
            "降钙素",
            "鲑鱼降钙素",
            "鲑降钙素",
            "依降钙素",
            "密盖息",
        ),
    ),
    "drug holiday": (
        "drug_holiday",
        ("drug holiday", "bisphosphonate holiday", "holiday", "药物假期", "停药假期"),
    ),
}

_GLUCOCORTICOIDS: tuple[str, ...] = (
    "prednisone",
    "prednisolone",
    "methylprednisolone",
    "dexamethasone",
    "hydrocortisone",
    "cortisone",
    "betamethasone",
    "deflazacort",
    "glucocorticoid",
    "glucocorticoids",
    "corticosteroid",
    "corticosteroids",
    "oral steroids",
    "medrol",
    "泼尼松",
    "泼尼松龙",
    "强的松",
    "甲泼尼龙",
    "甲强龙",
    "地塞米松",
    "氢化可的松",
    "可的松",
    "倍他米松",
    "糖皮质激素",
)

_NONE_WORDS = {"none", "no treatment", "untreated", "no therapy", "nil", "无", "未治疗", "无治疗", "未用药"}
_IV_WORDS = ("iv", "i v", "intravenous", "injection", "inj", "infusion", "injectable", "静脉", "注射", "针")


def _normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = re.sub(r"[®™©]", " ", folded)
    folded = re.sub(r"[^\w\u4e00-\u9fff]+", " ", folded)
    return " ".join(folded.split())


def _is_cjk(name: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in name)


def _found(name: str, text: str) -> bool:
    if _is_cjk(name):
        return name in text
    # Digits attached to a name ("fosamax70mg") still count as a word boundary.
    return re.search(rf"(?<![a-z]){re.escape(name)}(?![a-z])", text) is not None


def _compact_found(name: str, compact: str) -> bool:
    return len(name.replace(" ", "")) >= 6 and name.replace(" ", "") in compact


def classify_agent(agent: str) -> AgentClass:
    """The drug class of one therapy entry; a glucocorticoid sets the modifier.

    Ibandronate is oral unless the text says it is given IV or by injection. A combination
    ("alendronate + prednisone") gives the drug's class with the glucocorticoid flag; two
    different classes in one entry are refused (one therapy row, one class).
    """
    text = _normalise(agent)
    if not text:
        raise UnknownAgent(agent, "empty agent")
    if text in {_normalise(w) for w in _NONE_WORDS}:
        return AgentClass("none", False, "none")
    compact = text.replace(" ", "")
    hits: dict[str, str] = {}
    for canonical, (drug_class, names) in _AGENTS.items():
        if any(_found(_normalise(n), text) for n in names):
            hits[canonical] = drug_class
    if not hits:
        for canonical, (drug_class, names) in _AGENTS.items():
            if any(_compact_found(_normalise(n), compact) for n in names):
                hits[canonical] = drug_class
    glucocorticoid = any(
        _found(_normalise(n), text) or _compact_found(_normalise(n), compact) for n in _GLUCOCORTICOIDS
    )
    if "ibandronate" in hits and any(_found(w, text) for w in _IV_WORDS):
        hits["ibandronate"] = "iv_bisphosphonate"
    if "drug holiday" in hits and len(hits) > 1:
        # "alendronate drug holiday" is a holiday from alendronate.
        hits = {"drug holiday": "drug_holiday"}
    classes = set(hits.values())
    if len(classes) > 1:
        raise UnknownAgent(agent, "agent names more than one drug class (" + ", ".join(sorted(classes)) + ")")
    if classes:
        canonical = sorted(hits)[0]
        return AgentClass(classes.pop(), glucocorticoid, canonical)
    if glucocorticoid:
        return AgentClass("none", True, GLUCOCORTICOID)
    raise UnknownAgent(agent)


def drug_class_of(agent: str) -> str:
    return classify_agent(agent).drug_class


def therapy_from_agent(agent: str, start: date, stop: date | None = None) -> Therapy:
    """A Therapy row as the therapies CSV gives it (agent, start_date, stop_date)."""
    if stop is not None and stop < start:
        raise ValueError(f"therapy stop date {stop.isoformat()} is before its start {start.isoformat()}")
    found = classify_agent(agent)
    return Therapy(
        agent=agent.strip(),
        drug_class=found.drug_class,
        start=start,
        stop=stop,
        glucocorticoid=found.glucocorticoid,
    )
