"""The monitoring core's sentences (`monitor.phrases`) in the reader's language.

The core gives a refusal reason or an alert as a code and its arguments; here each code is a
catalog message with the same arguments (`%(name)s`), translated through Babel like every other
text of the dashboard, with dates, numbers, sites and machines written as the reader's locale
writes them. A code this table does not know (a newer core) falls back to the core's English.
"""

from __future__ import annotations

from datetime import date

from markupsafe import Markup, escape

from monitor.model import Arg, Machine, Phrase, SiteRef
from monitor.phrases import CLAUSE_LISTS, english
from web import i18n
from web.i18n import N_
from web.queries.patient import SITE_NAMES, site_label

MESSAGES: dict[str, str] = {
    "different_manufacturers": N_("different manufacturers"),
    "different_models": N_("different models"),
    "different_serials": N_("same model, different serial numbers"),
    "refused_unknown_machine": N_(
        "serial number missing: machine identity unknown: %(machine_a)s and %(machine_b)s; "
        "exams without a serial number are never compared"
    ),
    "refused_cross_machine": N_(
        "%(why)s: %(machine_a)s and %(machine_b)s; no cross-calibration between them covers %(site)s"
    ),
    "via_crosscal_phantom": N_("compared through the phantom cross-calibration of %(machine_a)s and %(machine_b)s"),
    "via_crosscal_in_vivo": N_("compared through the in-vivo cross-calibration of %(machine_a)s and %(machine_b)s"),
    "reference_converted": N_("reference %(reference_g)s g/cm² converted to %(converted_g)s g/cm²"),
    "lsc_printed": N_("LSC %(lsc_g)s g/cm² as the machine printed it (file %(file)s)"),
    "crosscal_no_lsc": N_("the cross-calibration has no LSC for %(site)s: %(source)s LSC used"),
    "dissimilar": N_("dissimilar scans: %(reasons)s"),
    "different_vertebral_set": N_("different vertebral set (%(before)s then %(after)s)"),
    "different_scan_mode": N_("different scan mode (%(before)s then %(after)s)"),
    "different_protocol": N_("different analysis protocol (%(before)s then %(after)s)"),
    "area_changed": N_("bone area changed by %(change_pct)s %% (limit %(limit_pct)s %%)"),
    "vendor_marks_significant": N_("the vendor's report marks this change significant: %(why)s"),
    "vendor_marks_not_significant": N_("the vendor's report marks this change not significant: %(why)s"),
    "vendor_rounds": N_("the vendor rounds its change or compares other scans (its own baseline or previous)"),
    "our_lsc_differs": N_("our LSC (%(source)s, %(lsc_g)s g/cm²) is not the one the machine used"),
    "change_vs_baseline": N_("%(site)s %(pct)s %% vs baseline"),
    "change_vs_previous": N_("%(site)s %(pct)s %% vs previous"),
    "change_vs_both": N_("%(site)s %(pct)s %% vs baseline and previous"),
    "denosumab_followon_late": N_(
        "Denosumab stopped on %(stop_date)s; the follow-on %(agent)s started on %(start_date)s, %(days)s days "
        "after the recommended %(months)s months. Rebound bone loss may have begun: check the spine for "
        "vertebral fractures and BMD at the next scan."
    ),
    "denosumab_no_followon": N_(
        "Denosumab stopped on %(stop_date)s with no follow-on antiresorptive recorded within %(months)s months: "
        "high risk of rebound bone loss and multiple vertebral fractures. Start a bisphosphonate now (or "
        "record the one given) and check the spine."
    ),
    "denosumab_followon_due": N_(
        "Denosumab stopped on %(stop_date)s: start a follow-on antiresorptive (e.g. a bisphosphonate) by "
        "%(deadline_date)s to prevent rebound vertebral fractures."
    ),
    "loss_untreated": N_(
        "Significant BMD loss beyond the LSC with no treatment recorded (%(changes)s): "
        "assess fracture risk and consider treatment."
    ),
    "loss_on_holiday": N_(
        "Significant BMD loss during a bisphosphonate drug holiday (%(sites)s): consider resuming treatment."
    ),
    "loss_on_treatment": N_(
        "Significant BMD loss on %(agent)s (%(sites)s): review adherence and secondary causes "
        "of bone loss before changing treatment."
    ),
    "scan_too_early": N_(
        "The scan of %(scan_date)s came sooner than %(months)s months after the previous one (%(previous_date)s), "
        "the minimum for rule %(rule)s: a change over so short an interval is unlikely to exceed the least "
        "significant change."
    ),
    "precision_no_limit": N_("no minimum acceptable precision is configured for %(site)s"),
    "precision_within": N_("%(site)s: %%CV %(cv_pct)s within the ISCD limit of %(limit_pct)s %% (LSC %(lsc_pct)s %%)"),
    "precision_over": N_(
        "%(site)s: %%CV %(cv_pct)s exceeds the ISCD minimum acceptable precision of %(limit_pct)s %% "
        "(LSC %(lsc_limit_pct)s %%); the technologist should be retrained and the study repeated"
    ),
    "technologist_few_dof": N_("%(dof)s degrees of freedom; ISCD asks %(required)s of each technologist"),
    "phantom_accepted": N_(
        "phantom means differ by %(diff_pct)s %% (tolerance %(limit_pct)s %%): %(machine_a)s and %(machine_b)s "
        "may be compared with a pooled LSC of %(lsc_g)s g/cm²"
    ),
    "phantom_refused": N_(
        "phantom means differ by %(diff_pct)s %%, beyond the %(limit_pct)s %% tolerance: "
        "have the manufacturer service the unit; comparisons stay refused"
    ),
    "csv_unreadable": N_("%(file)s: cannot read the file (%(error)s)"),
    "csv_missing_columns": N_("%(file)s: line 1: missing column(s) %(columns)s"),
    "csv_no_rows": N_("%(file)s: the file has no rows"),
    "csv_too_many_rows": N_("%(file)s: more than %(limit)s rows"),
    "csv_field_empty": N_("%(file)s: line %(line)s: field %(field)s is empty"),
    "csv_not_a_date": N_("%(file)s: line %(line)s: field %(field)s: “%(text)s” is not a date (YYYY-MM-DD)"),
    "csv_not_a_number": N_("%(file)s: line %(line)s: field %(field)s: “%(text)s” is not a number"),
    "csv_bmd_not_positive": N_("%(file)s: line %(line)s: field %(field)s: BMD must be a positive number of g/cm²"),
    "csv_unknown_site": N_("%(file)s: line %(line)s: field %(field)s: “%(text)s” is not a known site"),
    "csv_unknown_serial": N_(
        "%(file)s: line %(line)s: field %(field)s: no machine with serial “%(text)s” has sent a scan yet"
    ),
    "csv_ambiguous_serial": N_(
        "%(file)s: line %(line)s: field %(field)s: serial “%(text)s” is ambiguous; add a model column"
    ),
    "csv_technologist_patient": N_("%(file)s: line %(line)s: fields technologist and patient are required"),
    "scan_too_early_real_change": N_(
        "The scan of %(scan_date)s came sooner than %(months)s months after the previous one (%(previous_date)s), "
        "the minimum for rule %(rule)s. Even so, the change exceeds the least significant change and is real: "
        "%(changes)s."
    ),
}

# Words an argument may hold (an LSC source), in the reader's language
WORDS = {
    "study": N_("precision study"),
    "vendor": N_("machine-printed"),
    "default": N_("default"),
    "crosscal": N_("cross-calibration"),
}
# Decimals and sign of the float arguments, as the English sentences write them (monitor.phrases);
# g/cm² values (`*_g`) and any other float: three decimals
FLOATS = {
    "pct": (2, True),
    "change_pct": (1, True),
    "diff_pct": (2, True),
    "cv_pct": (2, False),
    "lsc_pct": (1, False),
    "lsc_limit_pct": (1, False),
}
_SEPARATORS = {"en": (", ", "; "), "zh_CN": ("、", "；")}
_SIDES = {"left": N_("left"), "right": N_("right"), "mean": N_("mean of both sides")}


def localized_site(site: str, side: str | None = None) -> str:
    """A site and side in the request's language (骨密度 reports: 腰椎, 股骨颈, 全髋 …)."""
    if i18n.current() == i18n.DEFAULT:
        return site_label(site, side)
    name = i18n.gettext(SITE_NAMES[site]) if site in SITE_NAMES else site.replace("_", " ")
    if site.startswith("L") and "-" in site:
        name = i18n.gettext("Lumbar spine") + " " + site
    return f"{name}（{i18n.gettext(_SIDES[side])}）" if side in _SIDES else name


def machine_text(device: object) -> str:
    """A machine (a `Machine`, a device view with manufacturer, model and serial, or a label
    already written in English) in the reader's language ("S/N", "no serial")."""
    if isinstance(device, str):
        if i18n.current() == i18n.DEFAULT:
            return device
        return device.replace("(no serial)", "(" + i18n.gettext("no serial") + ")").replace(
            "(S/N ", "(" + i18n.gettext("S/N %(serial)s", serial="")
        )
    manufacturer, model, serial = (getattr(device, k, None) for k in ("manufacturer", "model", "serial"))
    return machine_label(
        Machine(str(manufacturer or ""), str(model or ""), serial if isinstance(serial, str) else None)
    )


def machine_label(machine: Machine) -> str:
    serial = i18n.gettext("S/N %(serial)s", serial=machine.serial) if machine.serial else i18n.gettext("no serial")
    return f"{machine.manufacturer} {machine.model} ({serial})"


def _arg(name: str, value: Arg) -> str:
    if isinstance(value, Phrase):
        return render(value)
    if isinstance(value, SiteRef):
        return localized_site(value.site, value.side)
    if isinstance(value, Machine):
        return machine_label(value)
    if isinstance(value, date):
        return i18n.day(value)
    if isinstance(value, tuple):
        items, clauses = _SEPARATORS.get(i18n.current(), _SEPARATORS["en"])
        return (clauses if name in CLAUSE_LISTS else items).join(_arg(name, item) for item in value)
    if isinstance(value, float):
        if name == "limit_pct":
            return i18n.number(value, 0 if value == int(value) else 1)
        digits, signed = FLOATS.get(name, (3, False))
        return i18n.number(value, digits, signed)
    if name == "site":
        return localized_site(value) if isinstance(value, str) else str(value)
    if name == "source" and isinstance(value, str) and value in WORDS:
        return i18n.gettext(WORDS[value])
    return str(value)


def render(phrase: Phrase | None, fallback: str | None = None) -> str:
    """The phrase in the request's language; `fallback` (the stored English) when there is no
    phrase (a row written before phrases existed)."""
    if phrase is None:
        return fallback or ""
    message = MESSAGES.get(phrase.code)
    if message is None:
        return english(phrase)
    return i18n.gettext(message, **{name: _arg(name, value) for name, value in phrase.args})


def refusal_html(error: object) -> Markup:
    """A refusal for a page: worded in the reader's language when it carries a phrase (an import's
    `ImportError_`), else its English text, marked as English."""
    found = getattr(error, "phrase", None)
    if isinstance(found, Phrase):
        return Markup(escape(render(found)))
    return Markup('<span lang="en">%s</span>') % str(error)


def render_all(phrases: tuple[Phrase, ...], fallback: str | None = None) -> str:
    """A comparison's notes as one text (the export's `reason`, in the reader's language)."""
    if not phrases:
        return fallback or ""
    _, clauses = _SEPARATORS.get(i18n.current(), _SEPARATORS["en"])
    return clauses.join(render(p) for p in phrases)
