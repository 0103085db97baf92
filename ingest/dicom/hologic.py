"""Hologic APEX results → ParsedReport: the current exam's sites from the summary tables.

The block is found and read by `ingest.dicom.hologic_blob`, its tables typed by
`ingest.dicom.hologic_tables`, its history, printed LSC and date locale by
`ingest.dicom.hologic_history`. Here the summary rows become sites: a spine "Total" row is the
analysed range of the vertebrae listed above it, and a dual-hip table's rows are sides.
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from ingest.dicom import header as h
from ingest.dicom.hologic_blob import decode_blob, find_results_element, parse_blob
from ingest.dicom.hologic_history import history_rows, locale_order, printed_lsc
from ingest.dicom.hologic_tables import (
    ScanContext,
    Table,
    is_history,
    is_summary,
    results_tables,
    scan_context,
    strip_html,
)
from ingest.dicom.sites import refuse_unplaced, site_in, split_side
from ingest.errors import MalformedResults, NotDxaResult, PatientMismatch
from ingest.report import ParsedReport, SiteMeasurement, VendorExtras, VendorHistoryRow
from ingest.vocabulary import bmd_to_g_cm2, canonical_side, lumbar_site, parse_cell

FORMAT = "hologic_apex_dicom"


def _summary_measurements(t: Table, ctx: ScanContext) -> list[SiteMeasurement]:
    if "bmd" not in t.columns:
        raise MalformedResults(
            f"Hologic results table {t.number} has no BMD column (header and cells do not line up): "
            "no bone density can be read; re-export the scan from the Hologic workstation"
        )
    if "region" not in t.columns:
        raise MalformedResults(f"Hologic results table {t.number} has no Region column")
    unit = t.units.get("bmd")
    title_site: str | None = None
    if ctx.region == "dual_hip":
        m = re.search(r"summary\s+(.*?)\s*\(", t.title, re.I)
        title_site = site_in(m.group(1), "dual_hip") if m else None
    out: list[SiteMeasurement] = []
    vertebrae: list[int] = []
    total_row: int | None = None
    for r in t.rows:
        label = strip_html(t.cell(r, "region") or "")
        bmd = parse_cell(t.cell(r, "bmd"), "BMD")
        if not label or bmd is None:
            continue
        site: str | None
        if title_site:  # dual-hip table per region: rows are Left / Right / Mean / |Diff.|
            site, side = title_site, canonical_side(label.strip(" .|:"))
        elif ctx.region == "spine" and label.lower() == "total":
            total_row = r
            continue
        else:
            site, side = site_in(label, ctx.region), ctx.side
            if site is None and ctx.region == "dual_hip":  # rows like "Neck Left"
                base, side, _ = split_side(label)
                site = site_in(base, "dual_hip")
        if site is None and not title_site:
            refuse_unplaced(label, ctx.region, "Hologic results")
        if site is None or (side is None and ctx.region != "spine"):
            continue  # MID, |Diff.|: not vocabulary
        if ctx.region == "spine" and re.fullmatch(r"L[1-5]", site):
            vertebrae.append(int(site[1]))
        out.append(_measurement(t, r, site, side, bmd, unit))
    if total_row is not None:
        site = _spine_range(vertebrae, strip_html(t.cell(total_row, "region") or ""))
        bmd = parse_cell(t.cell(total_row, "bmd"), "BMD")
        if site and bmd is not None:
            out.append(_measurement(t, total_row, site, None, bmd, unit))
    return out


def _spine_range(vertebrae: list[int], label: str) -> str | None:
    """The Total row is the analysed range: the vertebrae listed (and so included) above it.
    A non-contiguous set (L1, L2, L4) is not a vocabulary site and is left out."""
    explicit = lumbar_site(label)
    if explicit and "-" in explicit:
        return explicit
    vs = sorted(set(vertebrae))
    if len(vs) < 2 or vs != list(range(vs[0], vs[-1] + 1)):
        return None
    return f"L{vs[0]}-L{vs[-1]}"


def _measurement(t: Table, r: int, site: str, side: str | None, bmd: float, unit: str | None) -> SiteMeasurement:
    return SiteMeasurement(
        site=site,
        side=side,
        bmd=bmd_to_g_cm2(bmd, unit),
        t_score=parse_cell(t.cell(r, "t"), "T-score"),
        z_score=parse_cell(t.cell(r, "z"), "Z-score"),
        bmc_g=parse_cell(t.cell(r, "bmc"), "BMC"),
        area_cm2=parse_cell(t.cell(r, "area"), "area"),
        provenance=t.ref(r, "bmd"),
    )


def _scan_type(ctx: ScanContext) -> str:
    return {"spine": "spine", "hip": "hip", "dual_hip": "dual_hip", "forearm": "forearm"}.get(ctx.region, "total_body")


def parse_hologic(ds: Dataset, name: str, raw: bytes | str | None = None) -> ParsedReport:
    raw = raw if raw is not None else find_results_element(ds)
    if raw is None:
        raise NotDxaResult(
            "no results: this Hologic image has no private results data (0019,xx00) of creator "
            "HOLOGIC; the numbers are only pixels. Export with results enabled or send the PDF report"
        )
    blob = parse_blob(decode_blob(raw))
    tables = results_tables(blob)
    summaries = [t for t in tables if is_summary(t)]
    if not summaries:
        raise NotDxaResult("no results: the Hologic private data holds no results summary table")
    ctx = scan_context(ds, blob, tables)
    measurements: list[SiteMeasurement] = []
    for t in summaries:
        measurements.extend(_summary_measurements(t, ctx))
    if not measurements:
        raise NotDxaResult("no results: the Hologic results table lists no BMD for a known site")
    exam = h.exam_date(ds)
    graph = blob.get("GraphTitle1")
    default_site = site_in(graph, ctx.region) if graph else None
    if default_site is None and ctx.region == "spine":
        default_site = next((m.site for m in measurements if "-" in m.site), None)
    histories = [t for t in tables if is_history(t)]
    raws = [t.cell(r, "date") or "" for t in histories for r in t.rows]
    order = locale_order(blob, raws, exam)
    history: list[VendorHistoryRow] = []
    for t in histories:
        history.extend(history_rows(t, ctx, default_site, order))
    ref_db = blob.get("GraphTitle2")
    notes = tuple(n for n in (blob.get("TableNote1"),) if n)
    software = blob.get("HologicSoftwareVer")
    dev = h.device(ds, fallback_model=blob.get("Model"), software=software, serial_from_model=True)
    patient = h.patient(ds)
    in_blob = blob.get("PatientID")
    if in_blob and patient.patient_id and in_blob.casefold() != patient.patient_id.strip().casefold():
        raise PatientMismatch(
            "the DICOM header names another patient than the Hologic results inside the file; "
            "check which patient these results belong to before re-processing"
        )
    return ParsedReport(
        format=FORMAT,
        patient=patient,
        exam_date=exam,
        device=dev,
        scan_type=_scan_type(ctx),
        measurements=tuple(measurements),
        scan_mode=blob.get("ScanMode"),
        analysis_protocol=blob.get("AnalProtocol"),
        extras=VendorExtras(
            history=tuple(history),
            printed_lsc_g_cm2=printed_lsc(blob, ctx, default_site),
            reference_database=ref_db,
            notes=notes,
        ),
        **h.uids(ds),
    )
