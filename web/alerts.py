"""A patient's alerts as the patient page shows them: the sentence the evaluation wrote, what the
alert means for the clinician, and who acknowledged it, when and why.

Alerts come from the stored evaluation only (`db.history.save_evaluation` keeps the alert rows
in step with the comparisons and therapies); nothing here recomputes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from db.converters import phrase_from_json
from monitor.model import Phrase
from web import phrases
from web.i18n import N_
from web.queries.patient import LiveAlert

MEANING = {
    "denosumab_stopped": N_(
        "Stopping denosumab without a follow-on antiresorptive is followed by rapid bone loss "
        "and multiple vertebral fractures within months."
    ),
    "loss_on_treatment": N_(
        "A loss beyond the least significant change while on treatment suggests poor adherence, "
        "a secondary cause, or a treatment that is not working."
    ),
    "loss_on_holiday": N_("Bone loss beyond the least significant change during a drug holiday is a reason to end it."),
    "loss_untreated": N_("A loss beyond the least significant change is real, not measurement noise."),
    "scan_too_early": N_(
        "Over short intervals most changes are measurement noise; the sentence says whether this one "
        "exceeded the least significant change anyway."
    ),
}


@dataclass(frozen=True)
class AlertView:
    id: int
    code: str
    message: str
    state: str  # "open" or "acknowledged"
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    comment: str | None
    phrase: Phrase | None = None  # `message` as a phrase, for the reader's language

    @property
    def text(self) -> str:
        """The sentence in the request's language (the stored English for rows before phrases)."""
        return phrases.render(self.phrase, self.message)

    @property
    def meaning(self) -> str:
        return MEANING.get(self.code, "")


def alert_views(rows: Iterable[LiveAlert]) -> list[AlertView]:
    """The live alerts read with the patient (`PatientDetail.live_alerts`) as the page lists
    them: open ones first, then acknowledged ones, each group by when it was raised."""
    by_time = sorted(rows, key=lambda row: (row.raised_at, row.id))
    ordered = sorted(by_time, key=lambda row: row.state == "open", reverse=True)  # stable: keeps the time order
    return [
        AlertView(
            id=row.id,
            code=row.code,
            message=row.message,
            state=row.state,
            raised_at=row.raised_at,
            acknowledged_at=row.acknowledged_at,
            acknowledged_by=row.acknowledged_by,
            comment=row.ack_comment,
            phrase=phrase_from_json(row.phrase),
        )
        for row in ordered
    ]
