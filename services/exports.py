"""Exports: every patient (the command line) or one (the patient page and API) as the JSON export
object, a CSV, or FHIR R4 Bundles. Each export is audited in the transaction that reads it.

The JSON object is the one outside tools read (docs/architecture.md, "Exports"): built from stored
rows by `db.export`, so the pages, the API and the command line give the same figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import pandas as pd

from db.export import export_patient, export_patients
from services.audit import CLI, Actor, record
from services.context import Context
from services.fhir import build_bundle

Format = Literal["json", "csv", "fhir"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """A text a spreadsheet would run as a formula (leading = + - @ tab or CR) gets a leading
    apostrophe; numbers stay numbers, so a negative percent change is still a number in Excel."""
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


def export_all(ctx: Context, fmt: Format, identifier: str | None = None, actor: Actor = CLI) -> str:
    """`dxa export`: every patient, or those of one identifier (`LookupError` when there is none).
    CSV is one row per comparison; FHIR a list of Bundles (one Bundle for one patient)."""
    with ctx.sessions.begin() as session:
        patients = list(export_patients(session, identifier=identifier))
        if identifier is not None and not patients:
            raise LookupError("no patient with that identifier")
        scope = "one" if identifier else "all"
        record(session, actor, "export", None, format=fmt, patients=len(patients), scope=scope)
    if fmt == "csv":
        return comparisons_csv(patients)
    if fmt == "fhir":
        bundles = [build_bundle(p) for p in patients]
        payload: Any = bundles[0] if identifier is not None else bundles
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    return json.dumps(patients, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class ExportFile:
    body: str | dict[str, Any]  # a dict for JSON (the web app serialises it)
    media_type: str
    filename: str


def export_one(ctx: Context, actor: Actor, patient_id: int, fmt: Format, today: date) -> ExportFile:
    """One patient (by database id) as a download, audited as `patient_exported`. Named for what
    it holds, never after an internal row id nor the patient (a downloaded file's name is a path
    on someone's disk): the export date tells two downloads apart."""
    with ctx.sessions.begin() as session:
        export = export_patient(session, patient_id)
        record(session, actor, "patient_exported", patient_id, format=fmt)
    stem = f"dxa-patient-export_{today.isoformat()}"
    if fmt == "csv":
        return ExportFile(comparisons_csv([export]), "text/csv; charset=utf-8", f"{stem}_comparisons.csv")
    if fmt == "fhir":
        body = json.dumps(build_bundle(export), ensure_ascii=False, indent=1)
        return ExportFile(body, "application/fhir+json", f"{stem}.fhir.json")
    return ExportFile(export, "application/json", f"{stem}.json")
