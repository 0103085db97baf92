"""GE Lunar results written as XML into ImageComments (0020,4000) of an image object.

Two roots exist: `<DXA_RESULTS>` (SCAN › ROI with BMD / BMD_TSCORE / BMD_ZSCORE, TREND ›
EXAM) and the older `<DENSITOMETRY_RESULTS>` (SCAN › TREND with TREND_ROI and EXAM rows
carrying BMD / YAT / AMZ, where the current exam's row is the measurement). Values may use
decimal commas and mg/cm². The XML comes from an untrusted file: any DTD is refused, so no
entity can expand, and nothing is fetched.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date

from pydicom.dataset import Dataset

from ingest.dates import parse_date
from ingest.dicom import header as h
from ingest.dicom.dates import resolve_order, separator_default
from ingest.dicom.sites import Region, refuse_unplaced, region_and_side, site_in, split_side
from ingest.errors import MalformedResults, MissingField, NotDxaResult
from ingest.report import ParsedReport, SiteMeasurement, VendorExtras, VendorHistoryRow
from ingest.vocabulary import bmd_to_g_cm2, parse_cell

FORMAT = "ge_imagecomments_xml"
ROOTS = ("DXA_RESULTS", "DENSITOMETRY_RESULTS")


def results_xml(ds: Dataset) -> str | None:
    """The ImageComments text when it holds one of the known result roots."""
    raw = h.value(ds, h.T_IMAGE_COMMENTS)
    if raw is None:
        return None
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    return text if any(f"<{root}" in text for root in ROOTS) else None


def _bmd(text: str | None, unit: str | None) -> float | None:
    """BMD in g/cm²; a value above 10 can only be mg/cm² when the file states no unit."""
    v = parse_cell(text, "BMD")
    if v is None:
        return None
    if unit:
        return bmd_to_g_cm2(v, unit)
    return bmd_to_g_cm2(v, "mg/cm2") if v > 10 else v


def _unit(*elems: ET.Element | None) -> str | None:
    for e in elems:
        if e is None:
            continue
        for attr in ("units", "unit", "UNITS", "UNIT"):
            if e.get(attr):
                return e.get(attr)
    return None


def _site(label: str, region: Region | None, side: str | None) -> tuple[str | None, str | None]:
    if region is None:
        return None, None
    if region == "dual_hip":
        base, row_side, _ = split_side(label)
        return site_in(base, region), row_side
    return site_in(label, region), side


def parse_ge_xml(ds: Dataset, name: str, xml_text: str) -> ParsedReport:
    if "<!DOCTYPE" in xml_text.upper() or "<!ENTITY" in xml_text.upper():
        raise MalformedResults("GE results XML in ImageComments declares a DTD; refused for safety")
    start = min(i for i in (xml_text.find(f"<{r}") for r in ROOTS) if i >= 0)
    try:
        root = ET.fromstring(xml_text[start:].strip().rstrip("\x00"))
    except ET.ParseError:
        raise MalformedResults("GE results XML in ImageComments (0020,4000) is not well-formed") from None
    exam = h.exam_date(ds)
    if root.tag == "DXA_RESULTS":
        measurements, trend = _dxa_results(root)
    elif root.tag == "DENSITOMETRY_RESULTS":
        measurements, trend = _densitometry_results(root, exam)
    else:
        raise NotDxaResult("no results: ImageComments XML has no DXA results root")
    if not measurements:
        raise NotDxaResult("no results: the GE results XML lists no BMD for a known site")
    raws = [t[2] for t in trend]
    order = resolve_order(raws, exam, separator_default(raws))
    history = []
    for site, side, raw_date, bmd, prov in trend:
        d = parse_date(raw_date, order)
        if d is not None:
            history.append(VendorHistoryRow(site=site, side=side, date=d, bmd=bmd, provenance=prov))
    kinds = {region_and_side(m.provenance.split("/")[2])[0] for m in measurements}
    scan_type = str(next(iter(kinds))) if len(kinds) == 1 else "mixed"
    return ParsedReport(
        format=FORMAT,
        patient=h.patient(ds),
        exam_date=exam,
        device=h.device(ds, serial_from_model=False),
        scan_type=scan_type,
        measurements=tuple(measurements),
        extras=VendorExtras(history=tuple(history)),
        **h.uids(ds),
    )


_Trend = tuple[str, "str | None", str, "float | None", str]


def _dxa_results(root: ET.Element) -> tuple[list[SiteMeasurement], list[_Trend]]:
    out: list[SiteMeasurement] = []
    trend: list[_Trend] = []
    for scan in root.iter("SCAN"):
        stype = scan.get("type", "")
        region, side = region_and_side(stype)
        if region is None:
            continue  # a scan we do not monitor (lateral spine, VFA…)
        for roi in scan.findall("ROI"):
            label = roi.get("region", "")
            site, sside = _site(label, region, side)
            bmd_el = roi.find("BMD")
            bmd = _bmd(bmd_el.text if bmd_el is not None else None, _unit(bmd_el, roi, scan, root))
            if bmd is None:
                continue
            if site is None:
                refuse_unplaced(label, region, "GE results XML")
                continue
            if sside is None and region not in ("spine", "total_body"):
                raise MissingField(f"side of the {region} (left or right): a GE results XML scan names none")
            out.append(
                SiteMeasurement(
                    site=site,
                    side=sside,
                    bmd=bmd,
                    t_score=parse_cell(roi.findtext("BMD_TSCORE")),
                    z_score=parse_cell(roi.findtext("BMD_ZSCORE")),
                    bmc_g=parse_cell(roi.findtext("BMC")),
                    area_cm2=parse_cell(roi.findtext("AREA") or roi.findtext("Area")),
                    provenance=f"ImageComments/{root.tag}/{stype}/{label}/BMD",
                )
            )
        for tr in scan.findall("TREND"):
            label = tr.get("region", "")
            site, sside = _site(label, region, side)
            if site is None:
                continue
            for ex in tr.findall("EXAM"):
                b = ex.find("BMD")
                trend.append(
                    (
                        site,
                        sside,
                        ex.get("date", ""),
                        _bmd(b.text if b is not None else None, _unit(b, tr, scan, root)),
                        f"ImageComments/{root.tag}/{stype}/TREND {label}/{ex.get('date', '')}",
                    )
                )
    return out, trend


def _densitometry_results(root: ET.Element, exam: date) -> tuple[list[SiteMeasurement], list[_Trend]]:
    """Only trended ROIs are present; the EXAM row of this exam's date is the measurement
    (the latest row when no date matches)."""
    out: list[SiteMeasurement] = []
    trend: list[_Trend] = []
    for scan in root.iter("SCAN"):
        stype = scan.get("type", "")
        region, side = region_and_side(stype)
        for tr in scan.findall("TREND"):
            label = (tr.findtext("TREND_ROI") or tr.get("region") or "").strip()
            site, sside = _site(label, region, side)
            if site is None or (sside is None and region not in ("spine", "total_body")):
                continue
            exams = tr.findall("EXAM")
            raws = [(ex.findtext("EXAM_DATE") or "").strip() for ex in exams]
            order = resolve_order(raws, exam, separator_default(raws))
            dated = [(parse_date(r, order), ex, r) for r, ex in zip(raws, exams, strict=True)]
            current = next((x for x in dated if x[0] == exam), None)
            if current is None:
                known = [x for x in dated if x[0] is not None]
                current = max(known, key=lambda x: x[0] or date.min) if known else None
            for _d, ex, raw in dated:
                b = ex.find("BMD")
                trend.append(
                    (
                        site,
                        sside,
                        raw,
                        _bmd(b.text if b is not None else None, _unit(b, ex, tr, scan, root)),
                        f"ImageComments/{root.tag}/{stype}/TREND {label}/{raw}",
                    )
                )
            if current is None:
                continue
            ex = current[1]
            b = ex.find("BMD")
            bmd = _bmd(b.text if b is not None else None, _unit(b, ex, tr, scan, root))
            if bmd is None:
                continue
            out.append(
                SiteMeasurement(
                    site=site,
                    side=sside,
                    bmd=bmd,
                    t_score=parse_cell(ex.findtext("YAT") or ex.findtext("BMD_TSCORE")),
                    z_score=parse_cell(ex.findtext("AMZ") or ex.findtext("BMD_ZSCORE")),
                    provenance=f"ImageComments/{root.tag}/{stype}/TREND {label}/{current[2]}/BMD",
                )
            )
    return out, trend
