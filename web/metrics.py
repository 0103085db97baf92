"""Prometheus `/metrics` for the operations snapshot (`db.operations`): read at scrape time from
the database, so every web process answers the same and nothing is counted in memory. Counts
only: no file names, patients or error texts."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from db.operations import Snapshot, snapshot

BrokerDepth = Callable[[], int | None]


class OperationsCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], broker_depth: BrokerDepth | None) -> None:
        self.sessions = sessions
        self.broker_depth = broker_depth

    def read(self, session: Session | None = None) -> Snapshot:
        """The snapshot, in the request's own session when there is one (on SQLite, a second
        session would wait for the lock the request's transaction holds)."""
        depth = self.broker_depth() if self.broker_depth is not None else None
        if session is not None:
            return snapshot(session, broker_depth=depth)
        with self.sessions() as own:
            return snapshot(own, broker_depth=depth)

    def collect(self) -> Iterator[Metric]:
        snap = self.read()
        jobs = GaugeMetricFamily("dxa_jobs", "Jobs by state", labels=["state"])
        for state, n in snap.jobs.items():
            jobs.add_metric([state], n)
        yield jobs
        files = GaugeMetricFamily("dxa_files", "Received files by status", labels=["status"])
        for status, n in snap.files.items():
            files.add_metric([status], n)
        yield files
        quarantine = GaugeMetricFamily("dxa_quarantined_files", "Quarantined files by reason", labels=["reason"])
        for reason, n in snap.quarantine.items():
            quarantine.add_metric([reason], n)
        yield quarantine
        yield GaugeMetricFamily(
            "dxa_oldest_queued_job_age_seconds",
            "Age of the oldest queued job (0 when none)",
            value=snap.oldest_queued_s or 0,
        )
        yield GaugeMetricFamily("dxa_stuck_jobs", "Running jobs whose worker fell silent", value=len(snap.stuck))
        yield GaugeMetricFamily(
            "dxa_files_finished_last_hour", "Files ingested or quarantined in the last hour", value=snap.files_last_hour
        )
        yield GaugeMetricFamily(
            "dxa_inbox_entries_refused",
            "Inbox entries that were not regular files (symlinks, FIFOs, sockets, empty folders), recorded for QA",
            value=snap.inbox_refused,
        )
        if snap.broker_depth is not None:
            yield GaugeMetricFamily("dxa_broker_queue_depth", "Messages waiting in the broker", value=snap.broker_depth)


def make_registry(sessions: sessionmaker[Session], broker_depth: BrokerDepth | None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OperationsCollector(sessions, broker_depth))
    return registry
