"""Run one parse in a forked child with a hard time limit and a memory cap.

Why a bare fork and not multiprocessing: Celery's prefork pool runs tasks in daemonic
processes, which multiprocessing forbids from having children. A fork shares the already
imported parsers (no start-up cost), and the parent can always kill it: a PDF that makes
pdfminer loop forever or allocate without bound costs one child, never the worker.
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ChildFailed(Exception):
    """The child died or overran: not the file's content error, the file's effect on us."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ChildLimits:
    timeout_s: float
    memory_mb: int


def run_in_child(fn: Callable[..., Any], args: tuple[Any, ...], limits: ChildLimits) -> Any:
    """Return fn(*args) computed in a child process; re-raise its exception here.

    Exceptions raised by fn travel back pickled and are raised in the parent unchanged, so a
    ParseError keeps its type. A child killed by a signal, out of memory, or over time raises
    ChildFailed ("timeout", "memory", "crash").
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        status = 0
        try:
            cap = limits.memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            try:
                payload = pickle.dumps(("ok", fn(*args)))
            except MemoryError:
                payload = pickle.dumps(("memory", None))
            except BaseException as exc:
                try:
                    payload = pickle.dumps(("error", exc))
                except Exception:
                    payload = pickle.dumps(("crash", f"{type(exc).__name__} (not picklable)"))
            with os.fdopen(write_fd, "wb") as out:
                out.write(payload)
        except BaseException:
            status = 70
        finally:
            os._exit(status)

    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + limits.timeout_s
    timed_out = False
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([pipe], [], [], remaining)
            if not ready:
                continue
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, wait_status = os.waitpid(pid, 0)
    if timed_out:
        raise ChildFailed("timeout", f"parsing took longer than {limits.timeout_s:g} s and was stopped")
    if not chunks:
        if os.WIFSIGNALED(wait_status):
            sig = signal.Signals(os.WTERMSIG(wait_status)).name
            raise ChildFailed("crash", f"the parser process died ({sig})")
        raise ChildFailed("crash", "the parser process ended without a result")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value
    if kind == "error":
        raise value
    if kind == "memory":
        raise ChildFailed("memory", f"parsing needed more than {limits.memory_mb} MB and was stopped")
    raise ChildFailed("crash", f"the parser failed: {value}")
