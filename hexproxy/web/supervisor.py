"""Keeping N worker processes alive: the parent of ``hexproxy serve --workers N``.

A worker that dies (a crash, the OOM killer, a stray ``kill -9``) costs its clients only
the connections it held: the parent logs how it ended and starts another at once. A
worker that dies before it listens is a start-up failure (the port is taken, the cache
directory is unusable...): those are retried after a growing pause, and when no worker
is alive and ``STARTUP_FAILURES`` workers in a row failed to start, the parent gives up
and exits 1, since it can keep no worker alive. SIGTERM or SIGINT stop every worker and
then the parent, with status 0 if they all stopped cleanly.

Each worker has a slot number, 0 to N-1, that its replacement takes over (the metrics
each worker counts live in its slot: web/tally.py); ``ended(slot)`` is called once a
worker is reaped.

Workers say they are listening by writing one byte to a pipe. The parent sleeps in
select() on those pipes and on the signal wake-up fd, so it needs no timer to notice
anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("hexproxy")

STARTUP_FAILURES = 5  # workers in a row that die before listening, with none alive: give up
FIRST_PAUSE = 0.1  # seconds before retrying a failed start; doubles with each failure
MAX_PAUSE = 5.0
STOP_TIMEOUT = 30.0  # after SIGTERM, workers still running then are killed


@dataclass(slots=True)
class _Worker:
    pid: int
    ready_fd: int  # -1 once it said it listens (or died)
    slot: int
    ready: bool = False


class Supervisor:
    """Runs ``work(ready_fd, slot)`` in ``count`` forked children and keeps them running."""

    def __init__(
        self,
        count: int,
        work: Callable[[int, int], None],
        ended: Callable[[int], None] | None = None,
    ) -> None:
        self.count = count
        self.work = work
        self.ended = ended
        self.workers: dict[int, _Worker] = {}
        self.free_slots = list(range(count - 1, -1, -1))  # popped from the end: 0 first
        self.failures = 0  # workers in a row that died before listening
        self.due: list[float] = []  # when to start each missing worker
        self.stopping = 0  # the signal that asked us to stop
        self.stop_deadline = 0.0
        self.clean = True  # every worker stopped by us exited cleanly

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous_wakeup = signal.set_wakeup_fd(wake_w)
        handlers = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        }
        try:
            for _ in range(self.count):
                self._spawn(wake_r, wake_w)
            return self._loop(wake_r, wake_w)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_wakeup)
            os.close(wake_r)
            os.close(wake_w)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGCHLD:
            return  # only here so that the wake-up fd is written; _reap does the work
        if not self.stopping:
            self.stopping = signum
            self.stop_deadline = time.monotonic() + STOP_TIMEOUT
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _loop(self, wake_r: int, wake_w: int) -> int:
        while self.workers or (self.due and not self.stopping):
            pipes = {w.ready_fd: w for w in self.workers.values() if w.ready_fd >= 0}
            readable, _, _ = select.select([wake_r, *pipes], [], [], self._timeout())
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            for fd in readable:
                if fd in pipes:
                    self._heard_from(pipes[fd])
            self._reap()
            if self.stopping:
                if self.workers and time.monotonic() >= self.stop_deadline:
                    log.error("workers still running %.0f s after the signal: killing them",
                              STOP_TIMEOUT)  # fmt: skip
                    self._signal_all(signal.SIGKILL)
                continue
            if not self.workers and self.failures >= STARTUP_FAILURES:
                log.error(
                    "giving up: the last %d workers died before they could serve, "
                    "and none is running",
                    self.failures,
                )
                return 1
            now = time.monotonic()
            for when in [t for t in self.due if t <= now]:
                self.due.remove(when)
                self._spawn(wake_r, wake_w)
        return 0 if self.clean else 1

    def _timeout(self) -> float | None:
        if self.stopping:
            return max(0.0, self.stop_deadline - time.monotonic())
        if self.due:
            return max(0.0, min(self.due) - time.monotonic())
        return None

    def _spawn(self, wake_r: int, wake_w: int) -> None:
        slot = self.free_slots.pop()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                for fd in (wake_r, wake_w, ready_r, *(w.ready_fd for w in self.workers.values())):
                    if fd >= 0:
                        os.close(fd)
                self.work(ready_w, slot)
                code = 0
            except BaseException:
                log.exception("worker %d crashed", os.getpid())
            finally:
                logging.shutdown()  # os._exit skips it: write the last aggregated counts
                os._exit(code)
        os.close(ready_w)
        self.workers[pid] = _Worker(pid, ready_r, slot)

    def _heard_from(self, worker: _Worker) -> None:
        said = os.read(worker.ready_fd, 1)
        os.close(worker.ready_fd)
        worker.ready_fd = -1
        if said:
            worker.ready = True
            self.failures = 0
        # Nothing said, pipe closed: it died before listening; _reap counts that.

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if worker.ready_fd >= 0:
                self._heard_from(worker)  # it may have said "ready" just before dying
            if self.ended is not None:
                self.ended(worker.slot)
            self.free_slots.append(worker.slot)
            self._ended(worker, os.waitstatus_to_exitcode(status))

    def _ended(self, worker: _Worker, code: int) -> None:
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        if self.stopping:
            if code not in (0, -self.stopping):
                self.clean = False
                log.warning("worker %d %s while stopping", worker.pid, how)
            return
        if worker.ready:
            log.error("worker %d %s; starting another", worker.pid, how)
            self.due.append(time.monotonic())
            return
        self.failures += 1
        pause = min(MAX_PAUSE, FIRST_PAUSE * 2 ** (self.failures - 1))
        log.error(
            "worker %d %s before it could serve (%d in a row); starting another in %.1f s",
            worker.pid,
            how,
            self.failures,
            pause,
        )
        self.due.append(time.monotonic() + pause)
