"""Repeated log lines, aggregated: under a sustained fault the log says so once per
interval with a count, instead of once per request.

A soak with upstream failing for minutes wrote ~1.9 million lines of "serving
stale ..." (one per request), burying everything else. ``Repeats`` wraps the real
handler: the first occurrence of a line goes out at once; lines that repeat it
within the next ``interval`` are only counted; when the interval is over, one line
reports them, with the last one as the example:

    serving stale /packages/yew: upstream timed out (x412 in the last 10 s, 37 objects)

Lines repeat each other when they have the same logger, level and text but for
the repository object they name (``/packages/NAME``, ``/tarballs/FILE``, ...): a
fault hits every object alike, and one line per object per interval would still
be thousands of lines; the access log has every request. Different reasons stay
different lines.

A repeat arriving after the interval starts the next one with that summary, so a
steady stream of repeats costs one line per interval. Summaries of lines that
stopped repeating are written by a timer on the event loop (or at the next line,
or at close). Access lines do not pass through here (web/accesslog.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL = 10.0
MAX_TRACKED = 10_000  # distinct lines tracked at once; beyond that, lines pass unaggregated
MAX_OBJECTS = 1_000  # distinct objects counted per line and interval
# A repository object named in a line: what varies between repeats of one fault.
OBJECT = re.compile(r"/(?:packages|tarballs|docs|installs|repos)/[^\s:;,()'\"]+")

_Key = tuple[str, int, str]


@dataclass(slots=True)
class _Window:
    started: float
    repeats: int
    last: logging.LogRecord
    objects: set[str]


class Repeats(logging.Handler):
    def __init__(
        self,
        target: logging.Handler,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.target = target
        self.interval = interval
        self.clock = clock
        self._windows: dict[_Key, _Window] = {}
        self._due: float | None = None  # the earliest end of an interval
        self._timer: asyncio.TimerHandle | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Runs under self.lock (logging.Handler.handle takes it), from any thread.
        now = self.clock()
        if self._due is not None and now >= self._due:
            self._sweep(now)
        text = record.getMessage()
        key = (record.name, record.levelno, OBJECT.sub("*", text))
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) < MAX_TRACKED:
                self._windows[key] = _Window(now, 0, record, set())
                self._note_due(now + self.interval)
            self.target.handle(record)
            return
        window.repeats += 1
        window.last = record
        if len(window.objects) < MAX_OBJECTS:
            window.objects.add(text)
        self._arm_timer()

    def _note_due(self, when: float) -> None:
        if self._due is None or when < self._due:
            self._due = when

    def _sweep(self, now: float) -> None:
        """Report every interval that is over, and forget lines that stopped repeating."""
        self._due = None
        for key, window in list(self._windows.items()):
            if now - window.started < self.interval:
                self._note_due(window.started + self.interval)
            elif window.repeats:
                self.target.handle(self._summary(window, now))
                # Maybe still repeating: the next interval starts with this summary.
                self._windows[key] = _Window(now, 0, window.last, set())
                self._note_due(now + self.interval)
            else:
                del self._windows[key]

    def _summary(self, window: _Window, now: float) -> logging.LogRecord:
        record = logging.makeLogRecord(window.last.__dict__)
        seconds = max(1, round(now - window.started))
        many = len(window.objects)
        objects = f", {many}{'+' if many >= MAX_OBJECTS else ''} objects" if many > 1 else ""
        record.msg = (
            f"{window.last.getMessage()} (x{window.repeats} in the last {seconds} s{objects})"
        )
        record.args = None
        record.exc_info = record.exc_text = record.stack_info = None
        record.created = time.time()
        record.msecs = (record.created % 1) * 1000
        return record

    def _arm_timer(self) -> None:
        """Counts of lines that stopped repeating are reported by a timer on the event
        loop; from another thread, by the next line (or at close)."""
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.acquire()
        try:
            self._sweep(self.clock())
            if any(window.repeats for window in self._windows.values()):
                self._arm_timer()
        finally:
            self.release()

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        """Report every pending count, whatever its interval, then close the target."""
        self.acquire()
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            now = self.clock()
            for window in self._windows.values():
                if window.repeats:
                    self.target.handle(self._summary(window, now))
            self._windows.clear()
        finally:
            self.release()
        self.target.close()
        super().close()
