"""Several DXA documents inside one structured report: each its own report, or the file refused.

A router merging SRs, or a workstation exporting a day's work as one object, nests whole
documents ("DXA Report" › scan containers) under one root. Reading them as one document would
put every document's values under the header's patient and date, the worst failure this service
can have. So the content tree is cut into documents: a container that is not a scan region but
holds scan regions is a document; scan regions at the top belong to the header's document.

Each nested document takes its identity from its own observation context (Subject ID, Subject
Name, Subject Birth Date, Subject Sex, an observation or study date, Device Observer
manufacturer, model and serial), and from the header only where the header can be its own:

- scan regions at the top of the tree are the header's document; a nested document naming no
  patient belongs to the header's patient too, unless another document names a patient other
  than the header's: then it cannot be tied to a patient, and the file is refused;
- a document naming another patient than the header takes nothing of the header's patient, and
  must carry its own exam date; the file is refused otherwise;
- one nested document alone that names another patient than the header is a header and body
  that disagree, refused like a Hologic or Encapsulated PDF envelope naming another patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from pydicom.dataset import Dataset

from ingest.dates import parse_date
from ingest.dicom import header as h
from ingest.dicom.ge_sr import CONTENT_SEQ, Decode, children, meaning, node_text, parse_ge_sr_tree, root_name_of
from ingest.dicom.rawsr import Node
from ingest.dicom.sites import region_and_side
from ingest.errors import PatientMismatch
from ingest.report import ParsedReport

T_OBSERVATION_DATETIME = 0x0040A032
T_TEXT_VALUE = 0x0040A160
T_PERSON_NAME = 0x0040A123
T_DATE = 0x0040A121
T_DATETIME = 0x0040A120
T_CONCEPT_CODE = 0x0040A168
T_CODE_MEANING = 0x00080104
T_CODE_VALUE = 0x00080100
_NON_ALNUM = re.compile(r"[^a-z0-9]")
_MAX_DEPTH = 6

# Observation context concept names (DICOM's, and the plain words other writers use).
_CONTEXT = {
    "patient_id": {"subjectid", "patientid"},
    "name": {"subjectname", "patientname", "patientsname"},
    "birth_date": {"subjectbirthdate", "patientbirthdate", "patientsbirthdate", "birthdate", "dateofbirth"},
    "sex": {"subjectsex", "patientsex", "patientssex", "sex"},
    "exam_date": {
        "studydate",
        "studydatetime",
        "proceduredate",
        "proceduredatetime",
        "examdate",
        "scandate",
        "acquisitiondate",
        "acquisitiondatetime",
        "contentdate",
        "observationdatetime",
    },
    "manufacturer": {"deviceobservermanufacturer", "manufacturer"},
    "model": {"deviceobservermodelname", "modelname", "manufacturersmodelname", "model"},
    "serial": {"deviceobserverserialnumber", "serialnumber", "deviceserialnumber"},
}
_CONTEXT_KEY = {word: key for key, words in _CONTEXT.items() for word in words}


@dataclass
class Document:
    node: Node | None  # None: the header's own document (scan regions at the top of the tree)
    groups: list[Node] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)


def _is_region(node: Node, dec: Decode) -> bool:
    return region_and_side(meaning(node, dec))[0] is not None


def _holds_regions(node: Node, dec: Decode, depth: int = 0) -> bool:
    """A scan region container (one with content items under it) somewhere below `node`: a
    "HIP_FRAC_RISK" value under "FRAX" is a value, not a hip scan."""
    if depth > _MAX_DEPTH:
        return False
    return any(
        (_is_region(child, dec) and bool(children(child))) or _holds_regions(child, dec, depth + 1)
        for child in children(node)
    )


def _value(node: Node, dec: Decode) -> str | None:
    for tag in (T_TEXT_VALUE, T_PERSON_NAME, T_DATE, T_DATETIME):
        found = node_text(node, tag, dec)
        if found:
            return found
    codes = node.get(T_CONCEPT_CODE)
    if isinstance(codes, list) and codes:
        return node_text(codes[0], T_CODE_VALUE, dec) or node_text(codes[0], T_CODE_MEANING, dec)
    return None


def documents(tree: list[Node], dec: Decode) -> list[Document]:
    """The documents of a content tree that hold scan regions, the header's first."""
    found = [Document(None)]

    def visit(nodes: list[Node], doc: Document, depth: int) -> None:
        for node in nodes:
            if _is_region(node, dec):
                doc.groups.append(node)
            elif depth < _MAX_DEPTH and _holds_regions(node, dec):
                nested = Document(node)
                found.append(nested)
                when = node_text(node, T_OBSERVATION_DATETIME, dec)
                if when:
                    nested.context["exam_date"] = when
                visit(children(node), nested, depth + 1)
            else:
                key = _CONTEXT_KEY.get(_NON_ALNUM.sub("", meaning(node, dec).lower()))
                value = _value(node, dec)
                if key and value and key not in doc.context:
                    doc.context[key] = value

    visit(tree, found[0], 0)
    return [doc for doc in found if doc.groups]


def _context_date(raw: str | None) -> date | None:
    """A DA/DT value, or an unambiguous printed date (ISO, a month in words); never a numeric
    day/month guess."""
    if not raw:
        return None
    return h.dicom_date(raw) if raw[:8].isdigit() else parse_date(raw, "YMD")


def _header_for(ds: Dataset, doc: Document, other_patient: bool) -> Dataset:
    """The header a nested document is read with: the file's, less the content tree, with the
    document's own identity over it (and none of the header's patient when it names another)."""
    out = Dataset()
    out.file_meta = ds.file_meta
    out.is_little_endian = ds.is_little_endian
    out.is_implicit_VR = ds.is_implicit_VR
    for key in ds.keys():  # noqa: SIM118 (iterating a pydicom Dataset gives its elements, converted)
        if int(key) != CONTENT_SEQ:
            out[key] = ds[key]
    context = doc.context
    dropped: list[int] = []
    if other_patient:  # the header's patient, study and accession are another patient's
        dropped += [h.T_PATIENT_NAME, h.T_BIRTH_DATE, h.T_SEX, h.T_ISSUER, h.T_ACCESSION, h.T_STUDY_UID]
    if {"manufacturer", "model", "serial"} & set(context):  # a machine is named whole, never half
        dropped += [h.T_MANUFACTURER, h.T_MODEL, h.T_DEVICE_SERIAL, h.T_SOFTWARE]
    for tag in dropped:
        if tag in out:
            del out[tag]
    if "patient_id" in context:
        out.add_new(h.T_PATIENT_ID, "LO", context["patient_id"])
    if "name" in context:
        out.add_new(h.T_PATIENT_NAME, "PN", context["name"])
    birth = _context_date(context.get("birth_date"))
    if birth:
        out.add_new(h.T_BIRTH_DATE, "DA", birth.strftime("%Y%m%d"))
    if "sex" in context:
        out.add_new(h.T_SEX, "CS", context["sex"][:1].upper())
    when = _context_date(context.get("exam_date"))
    if when:
        for dated in (h.T_STUDY_DATE, h.T_CONTENT_DATE):
            out.add_new(dated, "DA", when.strftime("%Y%m%d"))
    for name, device_tag in (
        ("manufacturer", h.T_MANUFACTURER),
        ("model", h.T_MODEL),
        ("serial", h.T_DEVICE_SERIAL),
    ):
        if name in context:
            out.add_new(device_tag, "LO", context[name])
    return out


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").strip().casefold() == (b or "").strip().casefold()


def parse_documents(ds: Dataset, tree: list[Node], dec: Decode) -> tuple[ParsedReport, ...]:
    """Every DXA document of the content tree, each with its own identity (see above)."""
    docs = documents(tree, dec)
    if not docs or (len(docs) == 1 and docs[0].node is None):
        return (parse_ge_sr_tree(ds, tree, dec),)  # one document: the header's (no regions: refused there)
    header_id = h.text(ds, h.T_PATIENT_ID)
    named = {doc.context["patient_id"] for doc in docs if doc.context.get("patient_id")}
    strangers = {pid for pid in named if not _same(pid, header_id)}
    reports = []
    for number, doc in enumerate(docs, start=1):
        own = doc.context.get("patient_id")
        if own is None and strangers and doc.node is not None:
            raise PatientMismatch(
                f"this structured report holds {len(docs)} documents naming different patients, and document "
                f"{number} names none: it cannot be tied to a patient with certainty; send each report as its own file"
            )
        other = own is not None and not _same(own, header_id)
        if other and len(docs) == 1:
            raise PatientMismatch(
                "the DICOM header names another patient than the structured report inside the file; "
                "check which patient these results belong to before re-processing"
            )
        if other and _context_date(doc.context.get("exam_date")) is None:
            raise PatientMismatch(
                f"document {number} of this structured report names another patient than the file's header "
                "and carries no exam date of its own; its exam cannot be dated with certainty"
            )
        identity = ds if doc.node is None else _header_for(ds, doc, other)
        path = f"{root_name_of(ds)}/{meaning(doc.node, dec) if doc.node is not None else ''}#{number}"
        reports.append(parse_ge_sr_tree(identity, doc.groups, dec, path))
    return tuple(reports)
