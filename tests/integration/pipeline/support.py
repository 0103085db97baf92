"""What the pipeline tests (and `bench/pipeline.py`) share: the shared samples and their truth,
batches of files built from them, real service processes, and the end-state checks.

Nothing here mocks a service: processes are the real `celery`, `dxa` and `redis-server`
binaries, the databases are real SQLite files and PostgreSQL databases.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = Path(os.environ.get("DXA_SAMPLES", ROOT.parent / "shared" / "samples"))
VENV_BIN = Path(sys.executable).parent
PCT_TOL = 0.01

# Files in the samples folder that are not samples.
_NOT_SAMPLES = re.compile(r"(\.truth\.json|\.csv|\.md|MANIFEST\.json)$")


# --------------------------------------------------------------------------- samples and truth


@dataclass(frozen=True)
class Sample:
    rel: str  # path below the samples folder, also used below the inbox
    path: Path
    truth: dict[str, Any]

    @property
    def expect(self) -> str:
        return str(self.truth["expect"])

    @property
    def arrival(self) -> int:
        return int(self.truth.get("arrival") or 1)

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def load_samples(root: Path = SAMPLES) -> list[Sample]:
    samples = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or _NOT_SAMPLES.search(path.name):
            continue
        truth_path = path.with_name(path.name + ".truth.json")
        if not truth_path.is_file():
            raise AssertionError(f"sample without truth: {path}")
        samples.append(Sample(path.relative_to(root).as_posix(), path, json.loads(truth_path.read_text("utf-8"))))
    return samples


def load_scenarios(root: Path = SAMPLES) -> list[dict[str, Any]]:
    return [json.loads(p.read_text("utf-8")) for p in sorted(root.rglob("scenario.truth.json"))]


def expected_exam_counts(samples: Iterable[Sample], scenarios: Iterable[dict[str, Any]]) -> dict[str, int]:
    """patient_id -> number of exams: a scenario says it; a single file is one exam."""
    dates: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if s.expect == "accept":
            dates[str(s.truth["patient_id"])].add(str(s.truth["exam_date"]))
    counts = {pid: len(d) for pid, d in dates.items()}
    for sc in scenarios:
        counts[str(sc["patient_id"])] = int(sc["expected_exam_count"])
    return counts


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class BatchFile:
    rel: str  # where it is dropped, below the inbox
    data: bytes
    role: str  # original | redrop | uid_conflict | variant
    sample: Sample | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _is_dicom(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def rewrite_dicom(data: bytes, change: Callable[[Any], None]) -> bytes:
    import pydicom

    with warnings.catch_warnings():  # a sample's invalid UID is on purpose
        warnings.simplefilter("ignore", UserWarning)
        ds = pydicom.dcmread(io.BytesIO(data))
        change(ds)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _new_patient(k: int) -> Callable[[Any], None]:
    def change(ds: Any) -> None:
        from pydicom.uid import generate_uid

        if ds.get("SOPClassUID") != ENCAPSULATED_PDF:
            # An Encapsulated PDF names its patient inside the PDF too: renaming only the envelope
            # makes a header/report mismatch (refused); a new UID alone is the same exam again.
            # A Hologic results block names the patient too: renamed with the header.
            old = str(ds.PatientID)
            ds.PatientID = f"{old}V{k}"
            before, after = f'PatientID = "{old}";', f'PatientID = "{old}V{k}";'
            for elem in ds:
                if elem.tag.is_private and isinstance(elem.value, str) and before in elem.value:
                    elem.value = elem.value.replace(before, after)
                elif elem.tag.is_private and isinstance(elem.value, bytes) and before.encode() in elem.value:
                    elem.value = elem.value.replace(before.encode(), after.encode())
        ds.SOPInstanceUID = generate_uid()
        if "file_meta" in ds.__dict__ or getattr(ds, "file_meta", None) is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    return change


def same_uid_other_bytes(ds: Any) -> None:
    """Same instance UID, other results (a birth date): a real conflict. Other bytes with equal
    results are a router's re-encoding, a duplicate (tests/unit/ingest/test_dicom_routing.py)."""
    block = ds.private_block(0x0009, "DXA MONITOR TEST", create=True)
    block.add_new(0x01, "LO", "uid conflict fixture")
    ds.PatientBirthDate = "19000101"


def make_batch(samples: list[Sample], total: int, *, redrops: int = 10, conflicts: int = 3) -> list[BatchFile]:
    """`total` files: every sample once, `redrops` exact copies of samples (must count as
    duplicates), `conflicts` DICOM files with a sample's SOP Instance UID but other bytes (one of
    each pair must end in quarantine/uid_conflict), and distinct variants for the rest: DICOM
    samples as new patients (PatientID + "V<k>", new UID; an Encapsulated PDF keeps its patient),
    PDFs with a comment after %%EOF (the same exam again, merged)."""
    batch = [BatchFile(s.rel, s.data, "original", s) for s in samples]
    accepted = [s for s in samples if s.expect == "accept"]
    with_uid = [s for s in accepted if _is_dicom(s.data)]
    step = max(1, len(samples) // max(redrops, 1))
    batch += [
        BatchFile(f"redrop/{i:03d}_{Path(s.rel).name}", s.data, "redrop", s)
        for i, s in enumerate(samples[::step][:redrops])
    ]
    batch += [
        BatchFile(
            f"conflict/{i:03d}_{Path(s.rel).name}", rewrite_dicom(s.data, same_uid_other_bytes), "uid_conflict", s
        )
        for i, s in enumerate(with_uid[:conflicts])
    ]
    k = 0
    while len(batch) < total:
        s = accepted[k % len(accepted)]
        round_ = k // len(accepted) + 1
        if _is_dicom(s.data):
            data = rewrite_dicom(s.data, _new_patient(round_))
        else:
            data = s.data + f"\n%dxa-test-variant {round_}\n".encode()
        batch.append(BatchFile(f"variant{round_:03d}/{s.rel}", data, "variant", s))
        k += 1
    return batch[:total]


def drop(files: Iterable[BatchFile], inbox: Path, stamp: dict[str, float] | None = None) -> None:
    """Deliver like a careful sender: write `<name>.part` (ignored by the watcher), then rename."""
    for f in files:
        dest = inbox / f.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(f.data)
        os.replace(tmp, dest)
        if stamp is not None:
            stamp.setdefault(f.sha256, time.time())


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def service_env(**overrides: str | None) -> dict[str, str]:
    """The environment of a service process: ours minus every DXA_ variable, plus overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DXA_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    for key, value in overrides.items():
        if value is not None:
            env[key] = value
    return env


def scaled_env(data_dir: Path, inbox: Path, broker_url: str, database_url: str) -> tuple[dict[str, str], Settings]:
    """The environment of a watcher and its workers sharing one broker, database and data directory
    (files claimed at once, the inbox scanned every 0.2 s), and the settings of the test's own view."""
    env = service_env(
        DXA_BROKER_URL=broker_url,
        DXA_DATABASE_URL=database_url,
        DXA_DATA_DIR=str(data_dir),
        DXA_INBOX=str(inbox),
        DXA_MIN_FILE_AGE_S="0",
        DXA_SCAN_INTERVAL_S="0.2",
    )
    return env, Settings(data_dir=data_dir, inbox=inbox, database_url=database_url, broker_url=broker_url)


@dataclass
class Proc:
    """A service subprocess in its own process group (so SIGKILL takes its children too, like a
    container dying), logging to a file the test prints when something goes wrong."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = ROOT
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    offset: int = 0  # where the current run's log starts

    def start(self) -> Proc:
        self.starts += 1
        self.offset = len(self.log())
        log = self.log_path.open("ab")
        log.write(f"\n===== start {self.starts}: {' '.join(self.argv)}\n".encode())
        log.flush()
        self.popen = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float) -> None:
        """Wait for `text` in what the current run (since the last start) logged."""

        def seen() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.argv[0]} exited early:\n{self.log()[-3000:]}")
            return text in self.log()[self.offset :]

        wait_until(seen, timeout, f"{text!r} in {self.log_path.name}")

    def children(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the whole process group, and wait for the leader."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            self._reap_group()
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        self._reap_group()

    def _reap_group(self) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


def redis_ping(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except Exception:
        return False


class PrivateRedis:
    """A redis-server of our own on a free port (no persistence), to kill and restart freely
    without touching the machine's shared Redis."""

    def __init__(self, log_path: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--protected-mode", "no"]
        self.proc = Proc(argv, service_env(), log_path)

    def start(self) -> None:
        self.proc.start()
        wait_until(lambda: redis_ping(self.url), 15, "private redis-server to answer")

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()


def celery_worker(env: dict[str, str], log_path: Path, concurrency: int = 2) -> Proc:
    """A real Celery worker (prefork pool) on the project's app."""
    name = f"dxa-test-{uuid.uuid4().hex[:8]}@%h"
    argv = [str(VENV_BIN / "celery"), "-A", "workers.celery_app", "worker", f"--concurrency={concurrency}"]
    argv += ["--pool=prefork", "--loglevel=INFO", "--without-gossip", "--without-mingle", "-n", name]
    return Proc(argv, env, log_path)


def dxa(args: list[str], env: dict[str, str], log_path: Path) -> Proc:
    return Proc([str(VENV_BIN / "dxa"), *args], env, log_path)


def send_sweep(broker_url: str) -> bool:
    """What beat does every 30 s: put a `dxa.sweep_jobs` message on the broker for a worker."""
    from celery import Celery

    app = Celery("dxa-test-beat", broker=broker_url)
    try:
        with app.connection_for_write() as conn:
            app.send_task("dxa.sweep_jobs", connection=conn, retry=False)
        return True
    except Exception:
        return False
    finally:
        app.close()


# --------------------------------------------------------------------------- end state


@dataclass
class EndState:
    archived: dict[str, Path] = field(default_factory=dict)  # sha -> path
    quarantined: dict[str, tuple[str, Path, dict[str, Any]]] = field(default_factory=dict)  # sha -> code, path, sidecar
    # sha -> path: a scan read by OCR, held for a person (issue 14), waits in work/ (or the database)
    held: dict[str, Path] = field(default_factory=dict)
    dropped: int = 0
    duplicates: int = 0

    def summary(self) -> str:
        return (
            f"{self.dropped} dropped = {len(self.archived)} archived + {len(self.quarantined)} quarantined "
            f"+ {len(self.held)} held for a person + {self.duplicates} duplicates"
        )


_SHA_NAME = re.compile(r"^([0-9a-f]{64})(\.[a-z0-9]{1,8})?$")


def files_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


ODD_ENTRIES = "not_a_regular_file"  # services.inbox_entries.FOLDER


def scan_end_state(data_dir: Path, inbox: Path, held: Mapping[str, str | None] | None = None) -> EndState:
    """Read archive/ and quarantine/ and check their shape: archive/YYYY/MM/<sha>.<ext>,
    quarantine/<code>/<sha>.<ext> with <sha>.<ext>.json beside it; inbox empty; work/ empty but
    for the files `held` (sha -> stored path) for a person; no file twice."""
    left = files_below(inbox)
    assert not left, f"{len(left)} files left in the inbox, e.g. {left[:3]}"
    state = EndState()
    waiting = {os.path.realpath(path or ""): sha for sha, path in (held or {}).items()}
    work = []
    for path in files_below(data_dir / "work"):
        sha = waiting.pop(os.path.realpath(path), None)
        if sha is None:
            work.append(path)
            continue
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, f"bytes changed: {path}"
        state.held[sha] = path
    assert not work, f"{len(work)} files left in work/, e.g. {work[:3]}"
    for sha, stored in (held or {}).items():  # kept in the database (DXA_FILE_STORE=database), else lost
        if sha not in state.held:
            assert str(stored).startswith("database:"), f"held file missing from work/: {stored}"
            state.held[sha] = Path(str(stored))
    for path in files_below(data_dir / "archive"):
        rel = path.relative_to(data_dir / "archive").parts
        assert len(rel) == 3 and re.fullmatch(r"\d{4}", rel[0]) and re.fullmatch(r"0[1-9]|1[0-2]", rel[1]), path
        m = _SHA_NAME.match(rel[2])
        assert m, f"unexpected file in archive: {path}"
        assert m.group(1) not in state.archived and m.group(1) not in state.held, f"archived twice: {path}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == m.group(1), f"bytes changed: {path}"
        state.archived[m.group(1)] = path
    for path in files_below(data_dir / "quarantine"):
        if path.relative_to(data_dir / "quarantine").parts[0] == ODD_ENTRIES:
            continue  # inbox entries that were not files (services.inbox_entries): not the batch's
        if path.name.endswith(".json") and _SHA_NAME.match(path.name[:-5]):
            assert path.with_name(path.name[:-5]).is_file(), f"sidecar without its file: {path}"
            continue
        rel = path.relative_to(data_dir / "quarantine").parts
        assert len(rel) == 2 and re.fullmatch(r"[a-z0-9_]+", rel[0]), path
        m = _SHA_NAME.match(rel[1])
        assert m, f"unexpected file in quarantine: {path}"
        sha = m.group(1)
        assert all(sha not in kept for kept in (state.quarantined, state.archived, state.held)), f"kept twice: {path}"
        sidecar_path = path.with_name(path.name + ".json")
        assert sidecar_path.is_file(), f"quarantined without a sidecar: {path}"
        sidecar = json.loads(sidecar_path.read_text("utf-8"))
        assert sidecar.get("sha256") == sha and str(sidecar.get("reason") or "").strip(), sidecar
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, f"bytes changed: {path}"
        state.quarantined[sha] = (rel[0], path, sidecar)
    return state


def describe(paths: list[Path], sessions: Any) -> list[str]:
    """What the database says about stray files (for failure messages)."""
    from sqlalchemy import select

    from db.models import Job, SourceFile

    out = []
    with sessions() as session:
        for path in paths:
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            row = session.scalars(select(SourceFile).where(SourceFile.sha256 == sha)).one_or_none()
            if row is None:
                out.append(f"{path.name}: no row")
                continue
            jobs = session.execute(
                select(Job.id, Job.state, Job.attempts, Job.worker).where(Job.source_file_id == row.id)
            ).all()
            out.append(
                f"{path.name}: row {row.id} {row.status} {row.reason_code} times_seen={row.times_seen} "
                f"attempts={row.attempts} stored_path={row.stored_path} jobs={jobs}"
            )
    return out


def check_accounting(data_dir: Path, inbox: Path, batch: list[BatchFile], sessions: Any) -> EndState:
    """Every dropped file accounted for exactly once, on disk and in the database."""
    from sqlalchemy import func, select

    from db.models import Job, SourceFile

    with sessions() as session:
        held = dict(
            session.execute(select(SourceFile.sha256, SourceFile.stored_path).where(SourceFile.status == "held")).all()
        )
    waiting = {os.path.realpath(p or "") for p in held.values()}
    leftovers = [p for p in files_below(data_dir / "work") if os.path.realpath(p) not in waiting]
    if leftovers:
        raise AssertionError(f"{len(leftovers)} files left in work/: {describe(leftovers, sessions)}")
    state = scan_end_state(data_dir, inbox, held)
    dropped = Counter(f.sha256 for f in batch)
    kept = set(state.archived) | set(state.quarantined) | set(state.held)
    assert kept == set(dropped), (
        f"missing {len(set(dropped) - kept)} files, unexpected {len(kept - set(dropped))}: {state.summary()}"
    )
    state.dropped = len(batch)
    state.duplicates = len(batch) - len(dropped)
    assert len(state.archived) + len(state.quarantined) + len(state.held) + state.duplicates == state.dropped

    with sessions() as session:
        rows = list(session.scalars(select(SourceFile)))
        assert len(rows) == len(dropped), f"{len(rows)} source_files rows for {len(dropped)} distinct files"
        by_sha = {r.sha256: r for r in rows}
        for sha, path in state.archived.items():
            row = by_sha[sha]
            # a re-encoded copy of an ingested instance is archived too, as a duplicate of its first copy
            assert row.status in ("ingested", "duplicate") and row.stored_path == str(path), (
                row.status,
                row.stored_path,
                path,
            )
            linked = row.exam_id is not None or row.patient_id is not None or row.format is not None
            assert row.status == "duplicate" or linked
        for sha, (_code, path, _) in state.quarantined.items():
            row = by_sha[sha]
            assert row.status == "quarantined" and row.stored_path == str(path), (row.status, row.stored_path, path)
        for sha, path in state.held.items():
            row = by_sha[sha]
            assert row.status == "held" and os.path.realpath(row.stored_path or "") == os.path.realpath(path), (
                row.status,
                row.stored_path,
                path,
            )
        seen = sum(r.times_seen for r in rows)
        assert seen == len(batch), f"times_seen adds up to {seen}, {len(batch)} files were dropped"
        states = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        assert set(states) <= {"done"}, f"jobs not finished: {states}"
        ingest_jobs = Counter(session.scalars(select(Job.source_file_id).where(Job.kind == "ingest_file")).all())
        assert set(ingest_jobs) == {r.id for r in rows} and set(ingest_jobs.values()) == {1}, "one ingest job per file"
    return state


def check_outcomes(state: EndState, batch: list[BatchFile]) -> None:
    """Per file: a rejected sample in quarantine with a reason in plain words, each UID-conflict
    pair split between archive and quarantine/uid_conflict, everything else archived."""
    conflict_pairs = {f.sha256: f.sample.sha256 for f in batch if f.role == "uid_conflict" and f.sample}
    for f in batch:
        sha = f.sha256
        if f.role == "uid_conflict" or sha in conflict_pairs.values():
            continue
        if f.sample is not None and f.sample.expect == "reject":
            assert sha in state.quarantined, f"{f.rel}: expected quarantine"
            reason = str(state.quarantined[sha][2]["reason"]).lower()
            words = [w.lower() for w in f.sample.truth["reason_contains"]]
            assert any(w in reason for w in words), f"{f.rel}: reason {reason!r} has none of {words}"
        else:
            assert sha in state.archived, f"{f.rel} ({f.role}) not archived: {state.quarantined.get(sha, '?')}"
    for a, b in conflict_pairs.items():
        homes = sorted(["archive" if s in state.archived else state.quarantined[s][0] for s in (a, b)])
        assert homes == ["archive", "uid_conflict"], f"UID conflict pair ended in {homes}"


def _norm_site(s: Any) -> str:
    return str(s or "").strip().lower().replace(" ", "_")


def _same_machine(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def norm(v: Any) -> str:
        return re.sub(r"\s+", "", str(v or "")).lower()

    if not a.get("serial") or not b.get("serial"):
        return False
    return all(norm(a[k]) == norm(b[k]) for k in ("manufacturer", "model", "serial"))


def check_exports(
    patients: list[dict[str, Any]], samples: list[Sample], scenarios: list[dict[str, Any]], *, variants: bool = False
) -> None:
    """Exams per patient exactly as the truth says; every scenario comparison present with its
    status and percent change; no 'ok' comparison between two machines."""
    by_id = {str(p["patient_id"]): p for p in patients}
    want = expected_exam_counts(samples, scenarios)
    got = {pid: len(p["exams"]) for pid, p in by_id.items() if p["exams"]}
    if not variants:
        assert got == want, f"exams per patient differ: expected {want}, got {got}"
    else:
        assert {pid: got.get(pid) for pid in want} == want
    for sc in scenarios:
        p = by_id[str(sc["patient_id"])]
        dates = {e["exam_id"]: e["date"] for e in p["exams"]}
        devices = {e["date"]: e["device"] for e in p["exams"]}
        have: dict[tuple[str, Any, str, str, str], dict[str, Any]] = {}
        for c in p["comparisons"]:
            key = (_norm_site(c["site"]), c["side"], dates[c["from_exam"]], dates[c["to_exam"]], c["reference"])
            assert key not in have, f"comparison twice: {key}"
            have[key] = c
            if c["status"] == "ok":
                a, b = devices[dates[c["from_exam"]]], devices[dates[c["to_exam"]]]
                assert _same_machine(a, b), f"{sc['patient_id']}: ok comparison across machines {key}"
        for w in sc["comparisons"]:
            key = (_norm_site(w["site"]), w["side"], w["from_exam"], w["to_exam"], w["reference"])
            c = have.get(key)
            assert c is not None, f"{sc['patient_id']}: comparison {key} missing"
            assert c["status"] == w["status"], f"{sc['patient_id']} {key}: {c['status']} != {w['status']}"
            if w["status"] == "ok":
                assert abs(float(c["percent_change"]) - float(w["percent_change"])) <= PCT_TOL + 1e-9, (key, c, w)
            elif w["status"].startswith("rejected"):
                assert c["percent_change"] is None and c["significance"] is None, c


def export_all(sessions: Any) -> list[dict[str, Any]]:
    from db.export import export_patients

    with sessions() as session:
        return list(export_patients(session))


def check_end_state(
    data_dir: Path,
    inbox: Path,
    batch: list[BatchFile],
    sessions: Any,
    samples: list[Sample],
    scenarios: list[dict[str, Any]],
    *,
    variants: bool = False,
) -> EndState:
    """Every file of the batch accounted for, each where its sample says, and the exports exactly as
    the truth says: what every pipeline test checks once its services are idle."""
    state = check_accounting(data_dir, inbox, batch, sessions)
    check_outcomes(state, batch)
    check_exports(export_all(sessions), samples, scenarios, variants=variants)
    return state


def pipeline_idle(sessions: Any, expected_seen: int) -> bool:
    """Every dropped file registered (times_seen adds up) and no job queued or running."""
    from sqlalchemy import func, select

    from db.models import Job, SourceFile

    with sessions() as session:
        seen = session.scalar(select(func.coalesce(func.sum(SourceFile.times_seen), 0)))
        busy = session.scalar(select(func.count()).select_from(Job).where(Job.state.in_(("queued", "running"))))
    return int(seen or 0) >= expected_seen and not busy


def finished_files(sessions: Any) -> int:
    from sqlalchemy import func, select

    from db.models import SourceFile

    with sessions() as session:
        n = session.scalar(
            select(func.count()).select_from(SourceFile).where(SourceFile.status.in_(("ingested", "quarantined")))
        )
    return int(n or 0)


class BrokerSubmit:
    """A `Submit` for a test process: sends the job id to the workers over the broker, as
    `workers.tasks.submit` does inside the service (whose Celery app is bound to the environment
    it was imported with)."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self.app = Celery("dxa-test-submit", broker=broker_url)

    def __call__(self, job_id: int, kind: str) -> None:
        name = "dxa.ingest_file" if kind == "ingest_file" else "dxa.evaluate_patient"
        self.app.send_task(name, args=[job_id])

    def close(self) -> None:
        self.app.close()
