"""Run parses in a forked child with a hard time limit and a memory cap.

Why a bare fork and not multiprocessing: Celery's prefork pool runs tasks in daemonic
processes, which multiprocessing forbids from having children. A fork shares the already
imported parsers (no start-up cost), and the parent can always kill it: a PDF that makes
pdfminer loop forever or allocate without bound costs one child, never the worker.

`run_in_child` forks one child per call. `ReusableChild` keeps one child for many calls, one at a
time: forking a worker of a hundred-odd megabytes, and the child warming the parsers' lazy caches
again, cost several times the parse itself (bench/pipeline.py). The same limits hold for each call
(the parent kills the child at the time limit; the memory cap is the child's), and a child is
replaced after a failure, after `REUSE_CALLS` calls, or once it has grown by a quarter of its cap.
A reused child's failure may come from what it parsed before, so the caller decides what it
means by running the call again in a fresh child (`ChildFailed.reused`).

`ReusableChild.run_many` writes a few requests ahead (issue 13): the child starts its next call as
soon as it has answered one, instead of idling until this process's thread, which queues for the
interpreter lock behind a busy one, has read the answer and written the next request.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import resource
import select
import signal
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

REUSE_CALLS = 250
WINDOW = 4  # requests `run_many` keeps written ahead: small, so neither pipe can fill up
_GROWTH_RETIRES = 0.25  # of the memory cap
_ALARM_GRACE_S = 5  # a child whose parent died stops by itself this long after the time limit
_FRAME = struct.Struct("!Q")


class ChildFailed(Exception):
    """The child died or overran: not the file's content error, the file's effect on us."""

    def __init__(self, code: str, message: str, *, reused: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reused = reused  # the child had run other calls before this one


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
    deadline = time.monotonic() + limits.timeout_s  # before the fork: the child's time starts there
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        status = 0
        try:
            _cap_growth(limits.memory_mb)
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
    return _outcome(pickle.loads(b"".join(chunks)), limits)


def _outcome(reply: tuple[Any, ...], limits: ChildLimits, *, reused: bool = False) -> Any:
    kind, value = reply[0], reply[1]
    if kind == "ok":
        return value
    if kind == "error":
        raise value
    if kind == "memory":
        raise ChildFailed("memory", f"parsing needed more than {limits.memory_mb} MB and was stopped", reused=reused)
    raise ChildFailed("crash", f"the parser failed: {value}", reused=reused)


# --------------------------------------------------------------------------- a child for many calls

# Pipe ends of every live reusable child of this process: a process forked from here (another
# child, a one-shot child) closes its copies, so that each child sees end-of-file when its own
# parent goes away, whoever else is still alive.
_PIPES: dict[int, tuple[int, int]] = {}


def _close_inherited_pipes() -> None:
    for request_w, reply_r in _PIPES.values():
        for fd in (request_w, reply_r):
            with contextlib.suppress(OSError):
                os.close(fd)
    _PIPES.clear()


os.register_at_fork(after_in_child=_close_inherited_pipes)


def _close_fds_except(*keep: int) -> None:
    """Close every inherited descriptor but stdio and `keep`.

    A long-lived child must not hold copies of its parent's pipes and sockets: a process at the
    other end of one (a subprocess waiting for end-of-file on its stdin, a peer waiting for a
    socket to close) would wait for as long as the child lives. subprocess does the same with
    close_fds before exec; a bare fork has to do it by hand."""
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _write_frame(fd: int, data: bytes) -> None:
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _vm_bytes() -> int:
    """This process's virtual size (what RLIMIT_AS caps)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _cap_growth(memory_mb: int) -> tuple[int, int]:
    """Cap the child's address space at what it was forked with plus `memory_mb`; return both.
    The cap is on what the parse adds: a forked child inherits its parent's whole virtual size
    (libraries, every thread's stack and malloc arena), which in a long-running worker or the test
    process can come near an absolute cap by itself, so that a file needing a few megabytes more
    ended as a "crash" (a library failing to map) rather than a parse or a "memory" refusal."""
    start_vm = _vm_bytes()
    cap = memory_mb * 1024 * 1024
    limit = start_vm + cap
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return start_vm, cap


def _serve(request_r: int, reply_w: int, limits: ChildLimits, max_calls: int) -> None:
    """The child's loop: one call per request frame, until end-of-file or retirement."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)  # not the worker's handlers
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # the parent is gone: just stop
    start_vm, cap = _cap_growth(limits.memory_mb)
    calls = 0
    while True:
        header = _read_exact(request_r, _FRAME.size)
        if header is None:
            return
        body = _read_exact(request_r, _FRAME.unpack(header)[0])
        if body is None:
            return
        retire = False
        try:
            fn, args, timeout_s = pickle.loads(body)
            signal.alarm(math.ceil(timeout_s) + _ALARM_GRACE_S)
            try:
                reply: tuple[Any, ...] = ("ok", fn(*args))
            finally:
                signal.alarm(0)
        except MemoryError:
            reply, retire = ("memory", None), True
        except BaseException as exc:
            reply = ("error", exc)
        calls += 1
        retire = retire or calls >= max_calls or _vm_bytes() - start_vm > cap * _GROWTH_RETIRES
        try:
            payload = pickle.dumps((*reply, retire))
        except MemoryError:
            payload, retire = pickle.dumps(("memory", None, True)), True
        except Exception:
            name = type(reply[1]).__name__
            payload, retire = pickle.dumps(("crash", f"{name} (not picklable)", True)), True
        _write_frame(reply_w, payload)
        if retire:
            return


class ReusableChild:
    """One forked child that runs calls one after the other (see the module docstring). Not
    thread-safe: keep one per thread."""

    def __init__(self, max_calls: int = REUSE_CALLS) -> None:
        self.max_calls = max_calls
        self.pid: int | None = None
        self.calls = 0  # calls this child has answered
        self._memory_mb = 0
        self._request_w = -1
        self._reply_r = -1
        self._owner = 0  # the process that forked the child (a process forked since has no child)
        self._rest = b""  # read beyond the answer being received: the start of the next one

    def _spawn(self, limits: ChildLimits) -> None:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            status = 0
            try:
                _close_fds_except(request_r, reply_w)
                _serve(request_r, reply_w, limits, self.max_calls)
            except BaseException:
                status = 70
            finally:
                os._exit(status)
        os.close(request_r)
        os.close(reply_w)
        self.pid, self.calls, self._memory_mb, self._owner = pid, 0, limits.memory_mb, os.getpid()
        self._request_w, self._reply_r = request_w, reply_r
        self._rest = b""
        _PIPES[pid] = (request_w, reply_r)

    def __del__(self) -> None:  # its thread ended: the child sees end-of-file and exits
        with contextlib.suppress(Exception):
            self.close()

    def close(self, *, kill: bool = False) -> int | None:
        """Let the child go (end-of-file makes it exit) or kill it; its wait status."""
        if self.pid is None:
            return None
        pid, self.pid = self.pid, None
        self._rest = b""
        if self._owner != os.getpid():  # copied into a forked process: not its child, not its pipes
            return None
        _PIPES.pop(pid, None)
        for fd in (self._request_w, self._reply_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return None

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], limits: ChildLimits) -> Any:
        """fn(*args) in the child, like `run_in_child`; a failure of a child that had answered
        calls before carries `reused=True`."""
        if self.pid is not None and (self._memory_mb != limits.memory_mb or self._owner != os.getpid()):
            self.close()
        if self.pid is None:
            self._spawn(limits)
        reused = self.calls > 0
        request = pickle.dumps((fn, args, limits.timeout_s))
        deadline = time.monotonic() + limits.timeout_s  # from the request: a late parent lets nothing over
        try:
            _write_frame(self._request_w, request)
        except BrokenPipeError:  # it had stopped while idle: nothing of this call reached it
            self.close(kill=True)
            self._spawn(limits)
            reused = False
            _write_frame(self._request_w, request)
        reply = self._receive(limits, reused, deadline)
        self.calls += 1
        if reply[-1]:  # it retires after this answer
            self.close()
        return _outcome(reply, limits, reused=reused)

    def run_many(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], limits: ChildLimits, window: int = WINDOW
    ) -> list[Outcome]:
        """fn(*args) for each of `calls`, one after the other in the child with the limits of `run`,
        up to `window` requests written ahead. Each call's outcome, in order: its value or the
        exception it raised (a failure of the child: `ChildFailed`), and whether the child had
        answered other calls before it (`Outcome.reused`). A child that fails costs the call it was
        running only: the calls written after it go to a fresh child."""
        out: list[Outcome] = []
        sent = 0  # calls written to the live child (those from len(out) on are not answered yet)
        while len(out) < len(calls):
            if self.pid is not None and (self._memory_mb != limits.memory_mb or self._owner != os.getpid()):
                self.close()
            if self.pid is None:
                self._spawn(limits)
                sent = len(out)
            try:
                while sent < len(calls) and sent - len(out) < window:
                    _write_frame(self._request_w, pickle.dumps((fn, calls[sent], limits.timeout_s)))
                    sent += 1
            except BrokenPipeError:
                if sent == len(out):  # it had stopped while idle: nothing of these calls reached it
                    self.close(kill=True)
                    continue
                # It stopped while running a call written before: that call's answer tells how.
            reused = self.calls > 0
            # The child started this call at the earliest when it answered the one before: its time
            # is counted from now, which is never before.
            deadline = time.monotonic() + limits.timeout_s
            try:
                reply = self._receive(limits, reused, deadline)
            except ChildFailed as exc:
                out.append(Outcome(None, exc, reused))
                continue
            self.calls += 1
            if reply[-1]:  # it retires after this answer: the calls written after it are sent again
                self.close()
            try:
                out.append(Outcome(_outcome(reply, limits, reused=reused), None, reused))
            except Exception as exc:
                out.append(Outcome(None, exc, reused))
        return out

    def _receive(self, limits: ChildLimits, reused: bool, deadline: float) -> tuple[Any, ...]:
        buffer, self._rest = self._rest, b""
        while True:
            if len(buffer) >= _FRAME.size:
                need = _FRAME.size + _FRAME.unpack(buffer[: _FRAME.size])[0]
                if len(buffer) >= need:
                    self._rest = buffer[need:]  # the next answer's start (`run_many`)
                    reply: tuple[Any, ...] = pickle.loads(buffer[_FRAME.size : need])
                    return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close(kill=True)
                raise ChildFailed(
                    "timeout", f"parsing took longer than {limits.timeout_s:g} s and was stopped", reused=reused
                )
            ready, _, _ = select.select([self._reply_r], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._reply_r, 1 << 16)
            if not chunk:
                status = self.close(kill=True)
                if status is not None and os.WIFSIGNALED(status):
                    sig = signal.Signals(os.WTERMSIG(status)).name
                    raise ChildFailed("crash", f"the parser process died ({sig})", reused=reused)
                raise ChildFailed("crash", "the parser process ended without a result", reused=reused)
            buffer += chunk


@dataclass(frozen=True)
class Outcome:
    """One call of `ReusableChild.run_many`: its value, or the exception it raised."""

    value: Any
    error: Exception | None
    reused: bool  # the child had answered other calls before this one
