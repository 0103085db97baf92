"""The core's sentences as a code and its arguments, rendered in English here and in the reader's
language by the web layer.

A refusal reason or an alert is a fact about data (which machines, which dates, which change),
worded for a person. The core cannot know the reader's language (it imports no Babel, no
catalog), so it says *what* happened as a `Phrase` (a code plus typed arguments) and keeps one
English rendering for the exports and the command line, whose text is part of their contract
(docs/architecture.md, "Exports"). `web.phrases` holds the same sentences as catalog messages and
renders them through Babel in the user's language, with dates and numbers as the locale writes
them. `to_data`/`from_data` turn a phrase into plain JSON-able data for storage.

Argument values are plain (`monitor.model.Arg`): text, whole numbers, floats, dates, a machine, a
site and side (`SiteRef`), another phrase, or a tuple of sites or phrases (a list the sentence
joins). The argument names say how the reader's language formats a number: `*_pct` a percentage,
`*_g` g/cm², `*_date` a date.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from monitor.model import Arg, Machine, Phrase, SiteRef

# How a list argument is joined in English: clauses with "; ", items with ", ".
CLAUSE_LISTS = frozenset({"reasons"})

# The English sentences (the export's text). `web.phrases.MESSAGES` holds each one as a catalog
# message with the same arguments; a test checks the two tables name the same codes and arguments.
ENGLISH: dict[str, str] = {
    # machines
    "different_manufacturers": "different manufacturers",
    "different_models": "different models",
    "different_serials": "same model, different serial numbers",
    # refusals
    "refused_unknown_machine": (
        "serial number missing: machine identity unknown: {machine_a} and {machine_b}; "
        "exams without a serial number are never compared"
    ),
    "refused_cross_machine": "{why}: {machine_a} and {machine_b}; no cross-calibration between them covers {site}",
    # notes on an allowed comparison
    "via_crosscal_phantom": "compared through the phantom cross-calibration of {machine_a} and {machine_b}",
    "via_crosscal_in_vivo": "compared through the in-vivo cross-calibration of {machine_a} and {machine_b}",
    "reference_converted": "reference {reference_g:.3f} g/cm² converted to {converted_g:.3f} g/cm²",
    "lsc_printed": "LSC {lsc_g:.3f} g/cm² as the machine printed it (file {file})",
    "crosscal_no_lsc": "the cross-calibration has no LSC for {site}: {source} LSC used",
    "dissimilar": "dissimilar scans: {reasons}",
    "different_vertebral_set": "different vertebral set ({before} then {after})",
    "different_scan_mode": "different scan mode ({before} then {after})",
    "different_protocol": "different analysis protocol ({before} then {after})",
    "area_changed": "bone area changed by {change_pct:+.1f} % (limit {limit_pct:g} %)",
    "vendor_marks_significant": "the vendor's report marks this change significant: {why}",
    "vendor_marks_not_significant": "the vendor's report marks this change not significant: {why}",
    "vendor_rounds": "the vendor rounds its change or compares other scans (its own baseline or previous)",
    "our_lsc_differs": "our LSC ({source}, {lsc_g:.3f} g/cm²) is not the one the machine used",
    # a change named in an alert
    "change_vs_baseline": "{site} {pct:+.2f} % vs baseline",
    "change_vs_previous": "{site} {pct:+.2f} % vs previous",
    "change_vs_both": "{site} {pct:+.2f} % vs baseline and previous",
    # alerts
    "denosumab_followon_late": (
        "Denosumab stopped on {stop_date}; the follow-on {agent} started on {start_date}, {days} days after "
        "the recommended {months} months. Rebound bone loss may have begun: check the spine for vertebral "
        "fractures and BMD at the next scan."
    ),
    "denosumab_no_followon": (
        "Denosumab stopped on {stop_date} with no follow-on antiresorptive recorded within {months} months: "
        "high risk of rebound bone loss and multiple vertebral fractures. Start a bisphosphonate now (or "
        "record the one given) and check the spine."
    ),
    "denosumab_followon_due": (
        "Denosumab stopped on {stop_date}: start a follow-on antiresorptive (e.g. a bisphosphonate) by "
        "{deadline_date} to prevent rebound vertebral fractures."
    ),
    "loss_untreated": (
        "Significant BMD loss beyond the LSC with no treatment recorded ({changes}): "
        "assess fracture risk and consider treatment."
    ),
    "loss_on_holiday": (
        "Significant BMD loss during a bisphosphonate drug holiday ({sites}): consider resuming treatment."
    ),
    "loss_on_treatment": (
        "Significant BMD loss on {agent} ({sites}): review adherence and secondary causes "
        "of bone loss before changing treatment."
    ),
    "scan_too_early": (
        "The scan of {scan_date} came sooner than {months} months after the previous one ({previous_date}), "
        "the minimum for rule {rule}: a change over so short an interval is unlikely to exceed the least "
        "significant change."
    ),
    # precision and cross-calibration (QA)
    "precision_no_limit": "no minimum acceptable precision is configured for {site}",
    "precision_within": "{site}: %CV {cv_pct:.2f} within the ISCD limit of {limit_pct:g} % (LSC {lsc_pct:.1f} %)",
    "precision_over": (
        "{site}: %CV {cv_pct:.2f} exceeds the ISCD minimum acceptable precision of {limit_pct:g} % "
        "(LSC {lsc_limit_pct:.1f} %); the technologist should be retrained and the study repeated"
    ),
    "technologist_few_dof": "{dof} degrees of freedom; ISCD asks {required} of each technologist",
    "phantom_accepted": (
        "phantom means differ by {diff_pct:+.2f} % (tolerance {limit_pct:g} %): {machine_a} and {machine_b} "
        "may be compared with a pooled LSC of {lsc_g:.3f} g/cm²"
    ),
    "phantom_refused": (
        "phantom means differ by {diff_pct:+.2f} %, beyond the {limit_pct:g} % tolerance: "
        "have the manufacturer service the unit; comparisons stay refused"
    ),
    # the imports' refusals (services.csv_rows: the same CSV layouts from the command line and a
    # page); kept in this one table so one renderer and one catalog serve every layer
    "csv_unreadable": "{file}: cannot read the file ({error})",
    "csv_missing_columns": "{file}: line 1: missing column(s) {columns}",
    "csv_no_rows": "{file}: the file has no rows",
    "csv_too_many_rows": "{file}: more than {limit} rows",
    "csv_field_empty": "{file}: line {line}: field {field} is empty",
    "csv_not_a_date": "{file}: line {line}: field {field}: {text!r} is not a date (YYYY-MM-DD)",
    "csv_not_a_number": "{file}: line {line}: field {field}: {text!r} is not a number",
    "csv_bmd_not_positive": "{file}: line {line}: field {field}: BMD must be a positive number of g/cm²",
    "csv_unknown_site": "{file}: line {line}: field {field}: {text!r} is not a known site",
    "csv_unknown_serial": "{file}: line {line}: field {field}: no machine with serial {text!r} has sent a scan yet",
    "csv_ambiguous_serial": "{file}: line {line}: field {field}: serial {text!r} is ambiguous; add a model column",
    "csv_technologist_patient": "{file}: line {line}: fields technologist and patient are required",
    "scan_too_early_real_change": (
        "The scan of {scan_date} came sooner than {months} months after the previous one ({previous_date}), "
        "the minimum for rule {rule}. Even so, the change exceeds the least significant change and is real: "
        "{changes}."
    ),
}


def english(phrase: Phrase) -> str:
    """The sentence in English, as the exports and the command line print it."""
    return ENGLISH[phrase.code].format(**{name: _english(name, value) for name, value in phrase.args})


def _english(name: str, value: Arg) -> Any:
    if isinstance(value, Phrase):
        return english(value)
    if isinstance(value, SiteRef):
        return value.english()
    if isinstance(value, Machine):
        return value.label()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        joiner = "; " if name in CLAUSE_LISTS else ", "
        return joiner.join(_english(name, item) for item in value)
    return value


def english_all(phrases: tuple[Phrase, ...] | list[Phrase]) -> str | None:
    """Notes joined as the export's `reason` (None when there are none)."""
    return "; ".join(english(p) for p in phrases) or None


# --------------------------------------------------------------------------- plain data


def _arg_to_data(value: Arg) -> Any:
    if isinstance(value, Phrase):
        return {"phrase": to_data(value)}
    if isinstance(value, SiteRef):
        return {"site": [value.site, value.side]}
    if isinstance(value, Machine):
        return {"machine": [value.manufacturer, value.model, value.serial]}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, tuple):
        return {"list": [_arg_to_data(item) for item in value]}
    return value


def to_data(phrase: Phrase) -> dict[str, Any]:
    return {"code": phrase.code, "args": {name: _arg_to_data(value) for name, value in phrase.args}}


def _arg_from_data(value: Any) -> Arg:
    if isinstance(value, Mapping):
        if "phrase" in value:
            return from_data(value["phrase"])
        if "site" in value:
            site, side = value["site"]
            return SiteRef(str(site), None if side is None else str(side))
        if "machine" in value:
            manufacturer, model, serial = value["machine"]
            return Machine(str(manufacturer), str(model), None if serial is None else str(serial))
        if "date" in value:
            return date.fromisoformat(str(value["date"]))
        if "list" in value:
            items = tuple(_arg_from_data(item) for item in value["list"])
            return tuple(item for item in items if isinstance(item, SiteRef | Phrase))
        raise ValueError("unknown phrase argument")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("unknown phrase argument")
    return value


def from_data(data: Mapping[str, Any]) -> Phrase:
    """The phrase `to_data` stored; `ValueError`/`KeyError` for data it did not write."""
    args = data.get("args") or {}
    return Phrase(str(data["code"]), tuple((str(k), _arg_from_data(v)) for k, v in args.items()))
