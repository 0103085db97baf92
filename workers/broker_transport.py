"""Kombu's Redis transport, with one fault of it mended: the worker must survive a Redis restart.

When the broker connection drops while a task's late acknowledgement is still pending, kombu
(5.7) tries the acknowledgement on a channel whose connection has already been closed, and fails
with an AttributeError (its connection parameters are read from a closed connection). That is
not among the errors Celery treats as a lost connection, so the worker's consumer reported an
"Unrecoverable error" and the worker shut down: after a Redis restart nothing ran until someone
started the worker again (seen in the fault test and the soak, reproduced in
`tests/integration/pipeline/test_broker_restart.py`). Here that situation raises the Redis
client's ConnectionError instead: Celery logs the lost acknowledgement and reconnects, as it does
for any lost connection. A lost acknowledgement is harmless: the message is delivered again and
the job, already claimed in the database, is not run twice (`services.runner`).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str | None) -> str | None:
    """The transport class for Celery's `broker_transport` (None: the URL's own)."""
    if broker_url and broker_url.split("://", 1)[0] in ("redis", "rediss"):
        return f"{__name__}:Transport"
    return None
