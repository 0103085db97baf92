"""`dxa demo`: a synthetic cohort, made here, for a first look without anyone's files.

A newcomer has no DXA files. This writes a small cohort of real file formats into the inbox of
the running service (Hologic APEX DICOM, GE Lunar Enhanced SR with a dual femur, Chinese OsteoSys
PRIMUS PDF reports, and one stray file that ends in quarantine), waits for the service to ingest them, then
loads what no scanner sends (precision studies, a phantom cross-calibration, drug histories in
English and Chinese) through the same importers as `dxa precision|crosscal|therapies import`.

Everything is marked as demo data: patient identifiers start with `DEMO-`, family names are
`DEMO`, files go to `<inbox>/dxa-demo/`, and every value is invented. The cohort shows every
screen with content: a machine replaced without cross-calibration (refused comparisons, a new
baseline), two scanners of one model made comparable by a phantom study, a real loss, a
denosumab course stopped with a late follow-on, Chinese names and agents, a quarantined file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from io import BytesIO
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import SourceFile
from dxa.apex_blob import apex_blob
from dxa.pdf_print import print_pdf

DEMO_PREFIX = "DEMO-"
DEMO_FOLDER = "dxa-demo"
_SC = "1.2.840.10008.5.1.4.1.1.7"
_ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"


@dataclass(frozen=True)
class DemoFile:
    name: str
    data: bytes


@dataclass(frozen=True)
class Machine:
    manufacturer: str
    model: str
    serial: str


HOLOGIC_OLD = Machine("HOLOGIC", "Discovery A", "DEMO45001")
HOLOGIC_NEW = Machine("HOLOGIC", "Horizon A", "DEMO20001")
GE_ONE = Machine("GE Healthcare", "Lunar iDXA", "DEMO+100001")
GE_TWO = Machine("GE Healthcare", "Lunar iDXA", "DEMO+100002")


def _uid(*parts: object) -> str:
    """A stable DICOM UID (2.25 + a number from the parts): running the demo twice sends the
    same files, which the service then counts as duplicates instead of new exams."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return "2.25." + str(int(digest[:30], 16))


def _base(sop_class: str, machine: Machine, pid: str, name: str, birth: date, day: date) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(sop_class, pid, day)
    ds.StudyInstanceUID = _uid("study", pid, day)
    ds.StudyDate = day.strftime("%Y%m%d")
    ds.AccessionNumber = "DEMO" + day.strftime("%y%m%d")
    ds.Manufacturer = machine.manufacturer
    ds.ManufacturerModelName = machine.model
    ds.DeviceSerialNumber = machine.serial
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = "F"
    return ds


def _bytes(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- Hologic APEX DICOM

_SPINE_COLUMNS = [(1, "Region"), (2, "Area[cm2]"), (4, "BMC[(g)]"), (3, "BMD[g/cm2]"), (5, "T-score"), (6, "Z-score")]


def _hologic_blob(machine: Machine, day: date, rows: list[list[str]]) -> str:
    return apex_blob(
        rows,
        _SPINE_COLUMNS,
        scan_id=day.strftime("A%m%d%y"),
        scan=f"{day.strftime('%B %d, %Y')} - {day.strftime('A%m%d%yD')}",
        scan_mode="f Lumbar Spine",
        protocol="Spine",
        model=f"{machine.model} (S/N {machine.serial})",
    )


def hologic_spine(machine: Machine, pid: str, name: str, birth: date, day: date, total_bmd: float) -> bytes:
    """A Hologic spine exam as APEX stores it: a Secondary Capture with the results in its
    private block; the vertebrae follow the total."""
    rows = []
    for i, offset in enumerate((-0.045, -0.01, 0.02, 0.03), start=1):
        bmd = total_bmd + offset
        rows.append(
            [f"L{i}", f"{14 + i:.2f}", f"{(14 + i) * bmd:.2f}", f"{bmd:.3f}", f"{(bmd - 1.047) / 0.11:.1f}", "-0.8"]
        )
    t_total = (total_bmd - 1.047) / 0.11
    rows.append(["Total", "62.00", f"{62 * total_bmd:.2f}", f"{total_bmd:.3f}", f"{t_total:.1f}", "-0.6"])
    ds = _base(_SC, machine, pid, name, birth, day)
    ds.Modality = "BD"
    ds.add_new((0x0019, 0x0010), "LO", "HOLOGIC")
    ds.add_new((0x0019, 0x1000), "UN", _hologic_blob(machine, day, rows).encode("utf-8"))
    return _bytes(ds)


# --------------------------------------------------------------------------- GE Lunar Enhanced SR


def _code(meaning: str) -> Sequence:
    item = Dataset()
    item.CodeValue = "DEMO-1"
    item.CodingSchemeDesignator = "99GEMS"
    item.CodeMeaning = meaning
    return Sequence([item])


def _container(meaning: str, children: list[Dataset]) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "CONTAINER"
    item.ConceptNameCodeSequence = _code(meaning)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(children)
    return item


def _num(meaning: str, value: float, unit: str = "g/cm2") -> Dataset:
    measured = Dataset()
    measured.NumericValue = f"{value:.3f}"
    units = Dataset()
    units.CodeValue = unit
    units.CodingSchemeDesignator = "UCUM"
    units.CodeMeaning = unit
    measured.MeasurementUnitsCodeSequence = Sequence([units])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "NUM"
    item.ConceptNameCodeSequence = _code(meaning)
    item.MeasuredValueSequence = Sequence([measured])
    return item


def _text(meaning: str, value: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = _code(meaning)
    item.TextValue = value
    return item


def _region(label: str, bmd: float) -> Dataset:
    t = (bmd - 0.94) / 0.12
    return _container(label, [_num("BMD", bmd), _text("BMD_TSCORE", f"{t:.1f}"), _text("BMD_ZSCORE", f"{t + 1:.1f}")])


def ge_exam(
    machine: Machine, pid: str, name: str, birth: date, day: date, spine: float, hips: tuple[float, float]
) -> bytes:
    """A GE Lunar exam as an Enhanced SR: the AP spine and a dual femur (left, right, mean)."""
    left, right = hips
    spine_group = _container("AP Spine", [_region("L1-L4", spine)])
    femur = _container(
        "DualFemur",
        [
            _region("Neck Left", left - 0.11),
            _region("Neck Right", right - 0.11),
            _region("Neck Mean", (left + right) / 2 - 0.11),
            _region("Total Left", left),
            _region("Total Right", right),
            _region("Total Mean", (left + right) / 2),
        ],
    )
    ds = _base(_ENHANCED_SR, machine, pid, name, birth, day)
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = _code("DXA Report")
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = Sequence([spine_group, femur])
    return _bytes(ds)


# --------------------------------------------------------------------------- OsteoSys PRIMUS, Chinese PDF


def _zh_date(day: date) -> str:
    return f"{day.year}年{day.month:02d}月{day.day:02d}日"


def primus_zh_pdf(pid: str, name: str, day: date, spine: float, hip: float) -> bytes:
    """A Chinese OsteoSys PRIMUS report (骨密度检测报告) as a PDF with a text layer, printed with
    reportlab's CID font (no font file needed): lumbar spine and left femur."""

    def t(bmd: float, young: float) -> str:
        return f"{(bmd - young) / 0.12:.1f}"

    rows = [(f"腰椎 L{i}", spine + d) for i, d in enumerate((-0.05, -0.01, 0.03, 0.02), start=1)]
    rows += [("腰椎 L1-L4", spine), ("左侧股骨颈", hip - 0.12), ("左侧大转子", hip - 0.2), ("左侧全髋", hip)]
    lines = [
        "演示医院（DEMO 数据，全部为虚构）",
        "骨密度检测报告",
        "双能X线吸收法（DXA）",
        f"姓名：{name} 性别：女 年龄：66岁 病历号：{pid}",
        f"检查号：DEMO{day.strftime('%y%m%d')} 检查日期：{_zh_date(day)} 身高：158.0cm 体重：52.0kg",
        "申请科室：内分泌科 临床诊断：骨质疏松症随访",
        "腰椎正位 左侧股骨",
        "测量结果",
        "部位 BMD(g/cm²) T值 Z值",
        *[f"{label} {bmd:.3f} {t(bmd, 1.05)} {float(t(bmd, 1.05)) + 1.0:.1f}" for label, bmd in rows],
        "诊断意见：",
        "演示数据。",
        "注：T值适用于绝经后女性及50岁以上男性；Z值适用于绝经前女性、儿童及50岁以下男性。",
        "设备：OsteoSys PRIMUS S/N：DEMOPRM0001 软件版本：1.2.0 精密度（CV）：≤1%",
        f"报告医师：演示 审核医师：演示 报告日期：{_zh_date(day)}",
    ]
    return print_pdf([lines], size=9, left=36, top=800, leading=14)


# --------------------------------------------------------------------------- the cohort


@dataclass(frozen=True)
class Cohort:
    files: tuple[DemoFile, ...]
    therapies_csv: str
    precision_csv: str
    crosscal_csv: str


def cohort() -> Cohort:
    """The demo cohort: every file, and the CSVs of what no scanner sends."""
    files: list[DemoFile] = []
    born = date(1948, 5, 17)
    # DEMO-0001: the Discovery is replaced by a Horizon; no cross-calibration: refused, new baseline
    for day, machine, bmd in (
        (date(2016, 3, 1), HOLOGIC_OLD, 0.861),
        (date(2018, 3, 6), HOLOGIC_OLD, 0.879),
        (date(2020, 3, 10), HOLOGIC_NEW, 0.902),
        (date(2022, 3, 15), HOLOGIC_NEW, 0.915),
    ):
        data = hologic_spine(machine, "DEMO-0001", "DEMO^REPLACED", born, day, bmd)
        files.append(DemoFile(f"DEMO-0001_{day.isoformat()}_spine.dcm", data))
    # DEMO-0002: two iDXAs of one model, a phantom study makes them comparable; a real loss
    for day, machine, spine, hips in (
        (date(2017, 5, 2), GE_ONE, 0.940, (0.812, 0.826)),
        (date(2019, 5, 7), GE_ONE, 0.902, (0.790, 0.801)),
        (date(2021, 5, 11), GE_TWO, 0.871, (0.771, 0.779)),
    ):
        data = ge_exam(machine, "DEMO-0002", "DEMO^CROSSCAL", date(1951, 2, 3), day, spine, hips)
        files.append(DemoFile(f"DEMO-0002_{day.isoformat()}.dcm", data))
    # DEMO-0003: Chinese name; denosumab stopped, zoledronic acid too late (an alert)
    for day, spine, hips in ((date(2018, 4, 10), 0.835, (0.701, 0.699)), (date(2020, 1, 21), 0.876, (0.716, 0.712))):
        name = "DEMO^LI=演示^李"
        files.append(
            DemoFile(
                f"DEMO-0003_{day.isoformat()}.dcm",
                ge_exam(GE_ONE, "DEMO-0003", name, date(1955, 9, 9), day, spine, hips),
            )
        )
    # DEMO-0004: a Chinese hospital's OsteoSys PRIMUS reports (PDF), on 阿仑膦酸钠 since 2018
    for day, spine, hip in ((date(2018, 3, 18), 0.842, 0.781), (date(2020, 3, 20), 0.861, 0.787)):
        data = primus_zh_pdf("DEMO-0004", "演示王", day, spine, hip)
        files.append(DemoFile(f"DEMO-0004_{day.isoformat()}_zh.pdf", data))
    # a stray file: ends in quarantine with a reason a technologist can act on
    files.append(DemoFile("DEMO-scanner-notes.txt", b"Demo data: not a DXA result.\n"))
    therapies = "\n".join(
        [
            "patient_id,agent,start_date,stop_date",
            "DEMO-0001,alendronate,2016-04-01,2021-04-01",
            "DEMO-0002,阿仑膦酸钠,2017-06-01,",
            "DEMO-0003,denosumab,2018-05-01,2019-11-01",
            "DEMO-0003,唑来膦酸,2020-05-04,2020-05-04",
            "DEMO-0004,阿仑膦酸钠,2018-04-01,",
        ]
    )
    precision = ["device_serial,site,technologist,patient,bmd"]
    for serial in (GE_ONE.serial, GE_TWO.serial):
        for site, base in (("L1-L4", 0.95), ("total_hip", 0.82), ("femoral_neck", 0.71)):
            for subject in range(30):
                for scan in range(2):
                    wobble = ((subject * 7 + scan * 3) % 5 - 2) * 0.004
                    precision.append(
                        f"{serial},{site},demo-tech,DEMO-S{subject:02d},{base + subject * 0.003 + wobble:.3f}"
                    )
    crosscal = ["kind,device_a_serial,device_b_serial,site,subject,bmd_a,bmd_b"]
    for site, base in (("L1-L4", 0.95), ("total_hip", 0.82), ("femoral_neck", 0.71)):
        for scan in range(10):
            wobble = (scan % 3 - 1) * 0.001
            crosscal.append(
                f"phantom,{GE_ONE.serial},{GE_TWO.serial},{site},{scan + 1},{base + wobble:.3f},{base - wobble:.3f}"
            )
    return Cohort(tuple(files), therapies + "\n", "\n".join(precision) + "\n", "\n".join(crosscal) + "\n")


# --------------------------------------------------------------------------- writing it


def write_files(inbox: Path, files: tuple[DemoFile, ...]) -> list[Path]:
    """Into `<inbox>/dxa-demo/`, each written under a temporary name the watcher ignores and then
    renamed, so the service never claims a half-written file."""
    folder = inbox / DEMO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        target = folder / f.name
        partial = folder / (f.name + ".part")
        partial.write_bytes(f.data)
        partial.replace(target)
        written.append(target)
    return written


def wait_until_received(
    sessions: sessionmaker[Session],
    files: tuple[DemoFile, ...],
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Each demo file's status once the service has finished it (ingested, duplicate or
    quarantined); those still unfinished at the deadline are missing from the answer."""
    wanted = {hashlib.sha256(f.data).hexdigest(): f.name for f in files}
    deadline = clock() + timeout_s
    done: dict[str, str] = {}
    while True:
        with sessions() as session:
            rows = session.execute(
                select(SourceFile.sha256, SourceFile.status).where(SourceFile.sha256.in_(list(wanted)))
            ).all()
        done = {wanted[sha]: status for sha, status in rows if status in ("ingested", "duplicate", "quarantined")}
        if len(done) == len(wanted) or clock() >= deadline:
            return done
        pause(0.5)
