"""`dxa health SERVICE`: the health check of each long-running process, as compose runs it.

Exit 0 when the process answers: the web app its /healthz (which asks the database), a worker
Celery's ping, the DICOM receiver a C-ECHO, the watcher and beat a heartbeat file they touch on
every loop (a loop that hangs stops touching it). Nothing here needs curl or a shell in the image.
"""

from __future__ import annotations

import socket
import urllib.request

from settings import Settings
from workers.heartbeat import heartbeat_fresh

SERVICES = ("web", "worker", "beat", "watch", "storescp")


def check(settings: Settings, service: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(healthy, one line for the operator)."""
    if service == "web":
        url = f"http://127.0.0.1:{settings.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as answer:
                return answer.status == 200, f"web answered {answer.status}"
        except OSError as exc:
            return False, f"web did not answer: {type(exc).__name__}"
    if service == "worker":
        from workers.celery_app import app

        node = f"celery@{socket.gethostname()}"
        replies = app.control.ping(destination=[node], timeout=timeout_s)
        return bool(replies), f"{node} {'answered' if replies else 'did not answer'} the ping"
    if service == "storescp":
        from ingest.storescp import echo

        title = settings.storescp_ae_title
        ok = echo("127.0.0.1", settings.storescp_port, title, title, timeout_s)
        return ok, f"C-ECHO {'answered' if ok else 'failed'}"
    if service in ("watch", "beat"):
        # The watcher loops every scan interval; beat at least every sweep (30 s).
        max_age = max(90.0, settings.scan_interval_s * 10) if service == "watch" else 120.0
        ok = heartbeat_fresh(settings, service, max_age)
        state = "fresh" if ok else f"missing or older than {max_age:.0f} s"
        return ok, f"{service} heartbeat {state}"
    raise ValueError(f"unknown service {service!r}")
