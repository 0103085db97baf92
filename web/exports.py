"""CSV and iCalendar exports.

CSV cells that a spreadsheet would run as a formula (leading = + - @ tab or CR) get a leading
apostrophe; numbers stay numbers, so a negative percent change is still a number in Excel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(rows: Iterable[Sequence[Any]], columns: Sequence[str]) -> str:
    frame = pd.DataFrame([[escape_cell(v) for v in row] for row in rows], columns=list(columns))
    return frame.to_csv(index=False, lineterminator="\r\n")


COMPARISON_CSV_COLUMNS = (
    "patient_id", "site", "side", "reference", "from_date", "to_date", "status", "delta_g_cm2",
    "percent_change", "lsc_g_cm2", "lsc_source", "significance", "dissimilar", "reason",
    "from_device", "to_device", "next_scan_due", "next_scan_rule",
)  # fmt: skip


def comparisons_csv(patients: list[dict[str, Any]]) -> str:
    """One row per comparison (the README's export schema), with exam dates and machines spelled
    out for a spreadsheet: `dxa export --format csv` and the patient page's CSV both write it."""

    def device(exam: dict[str, Any] | None) -> str:
        d = (exam or {}).get("device") or {}
        return " ".join(str(d.get(k) or "") for k in ("manufacturer", "model", "serial")).strip()

    rows = []
    for p in patients:
        exams = {e["exam_id"]: e for e in p["exams"]}
        nxt = p.get("next_scan") or {}
        for c in p["comparisons"]:
            a, b = exams.get(c["from_exam"]), exams.get(c["to_exam"])
            rows.append([
                p["patient_id"], c["site"], c["side"], c["reference"], (a or {}).get("date"), (b or {}).get("date"),
                c["status"], c["delta_g_cm2"], c["percent_change"], c["lsc_g_cm2"], c["lsc_source"],
                c["significance"], c["dissimilar"], c["reason"], device(a), device(b), nxt.get("due"),
                nxt.get("rule_id"),
            ])  # fmt: skip
    return to_csv(rows, COMPARISON_CSV_COLUMNS)


def _ics_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _fold(line: str) -> str:
    """RFC 5545 lines are at most 75 octets; longer ones continue on lines starting with a space."""
    encoded = line.encode("utf-8")
    if len(encoded) <= 75:
        return line
    out: list[str] = []
    current = b""
    for char in line:
        piece = char.encode("utf-8")
        if len(current) + len(piece) > (75 if not out else 74):
            out.append(current.decode("utf-8"))
            current = b""
        current += piece
    out.append(current.decode("utf-8"))
    return "\r\n ".join(out)


def to_ics(events: Iterable[tuple[str, date, str, str]], now: datetime | None = None) -> str:
    """All-day events (uid, day, summary, description) as an iCalendar document."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//DXA monitor//worklist//EN", "CALSCALE:GREGORIAN"]
    for uid, day, summary, description in events:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{uid}",
            f"DTSTAMP:{stamp}",
            f"DTSTART;VALUE=DATE:{day.strftime('%Y%m%d')}",
            f"DTEND;VALUE=DATE:{(day + timedelta(days=1)).strftime('%Y%m%d')}",
            f"SUMMARY:{_ics_text(summary)}",
            f"DESCRIPTION:{_ics_text(description)}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"
