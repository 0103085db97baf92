"""Filter forms read as people fill them: an empty box means "no filter", never an error.

Browsers send every field of a GET form, empty ones as `name=`; typing the query parameters as
`date | None` or `int | None` made FastAPI answer a raw JSON 422 to a page whose date box was
left empty. Filters are therefore read as text here: empty gives None, a value that cannot be
read gives None plus a sentence the page shows beside the form (the API answers 422 with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from markupsafe import Markup, escape

from web import i18n
from web.i18n import N_


class Sentence(str):
    """A sentence that reads as English text (the API's 422 detail) and renders in the page's
    language (`__html__`, which Jinja calls), with its arguments; `label` names a form field."""

    msgid: str
    variables: dict[str, str]

    def __new__(cls, msgid: str, **variables: str) -> Sentence:
        obj = super().__new__(cls, msgid % variables)
        obj.msgid = msgid
        obj.variables = variables
        return obj

    def __html__(self) -> Markup:
        words = {k: i18n.gettext(v) if k == "label" else v for k, v in self.variables.items()}
        return escape(i18n.gettext(self.msgid, **words))


_NOT_A_DATE = N_("%(label)s: “%(text)s” is not a date (YYYY-MM-DD); that filter was ignored.")
_NOT_A_CHOICE = N_("%(label)s: “%(text)s” is not one of the choices; that filter was ignored.")


@dataclass
class FilterErrors:
    """Sentences about filter fields that could not be read (and were therefore ignored)."""

    messages: list[Sentence] = field(default_factory=list)

    def day(self, value: str | None, label: str) -> date | None:
        text = (value or "").strip()
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            self.messages.append(
                Sentence(
                    N_("%(label)s: “%(text)s” is not a date (YYYY-MM-DD); that filter was ignored."),
                    label=label,
                    text=text,
                )
            )
            return None

    def integer(self, value: str | None, label: str) -> int | None:
        text = (value or "").strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            self.messages.append(
                Sentence(N_("%(label)s: “%(text)s” is not a number; that filter was ignored."), label=label, text=text)
            )
            return None

    def choice(self, value: str | None, allowed: tuple[str, ...], label: str) -> str | None:
        text = (value or "").strip()
        if not text:
            return None
        if text not in allowed:
            self.messages.append(
                Sentence(
                    N_("%(label)s: “%(text)s” is not one of the choices; that filter was ignored."),
                    label=label,
                    text=text,
                )
            )
            return None
        return text

    def flag(self, value: str | None, default: bool) -> bool:
        """A checkbox: absent or empty keeps the default; the usual spellings of yes and no."""
        text = (value or "").strip().lower()
        if not text:
            return default
        return text not in ("false", "0", "no", "off")

    def __bool__(self) -> bool:
        return bool(self.messages)
