"""The progress bar of one target's apply: bytes the store acknowledged, files done / total, large files in flight.

Honest by construction: the executor hands `advance` only what a backend reports through its progress
callback, and the backends call it once the store has answered (S3: per part for multipart, on completion
for a single PUT; a local folder: per chunk written). A retried file takes its bytes back. A large file whose
bytes are all acknowledged but whose upload is not yet complete (S3 CompleteMultipartUpload, verification)
is shown as "finishing".

Units: decimal (1 MB = 1,000,000 bytes), as in the plan and the report (render.human_size).

While the bar is shown, log records go through tqdm (logging_redirect_tqdm), which clears the bar, writes
the line and redraws the bar: `-v` on a terminal leaves no stale bar copies. The bar is drawn only on a
terminal (or when asked), so pipes and CI logs never get a carriage return.
"""
from __future__ import annotations

import logging
import sys
import threading
from contextlib import ExitStack
from types import TracebackType

from tqdm import tqdm

from .render import human_size


class _Tqdm(tqdm):
    """tqdm with one more field for bar_format: `{work}`, our own text (bytes, files, files in flight)."""

    work = ""

    @property
    def format_dict(self):
        return {**super().format_dict, "work": self.work}


LARGE = 8_000_000          # files at least this big are named while in flight
SHOWN_IN_FLIGHT = 2


class Bar:
    """One target's progress. Thread-safe: transfer threads call start/advance/finish concurrently."""

    def __init__(self, target: str, total_bytes: int, total_files: int, show: bool) -> None:
        self.target = target
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.show = show and total_bytes > 0
        self.acknowledged = 0
        self.files_done = 0
        self._flight: dict[str, list[int]] = {}       # large key -> [acknowledged, size]
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._bar: tqdm | None = None

    def __enter__(self) -> Bar:
        if self.show:
            from tqdm.contrib.logging import logging_redirect_tqdm
            self._bar = self._stack.enter_context(_Tqdm(
                total=self.total_bytes, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr,
                desc=self.target, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {work} [{elapsed}<{remaining}, {rate_fmt}]"))
            self._stack.enter_context(logging_redirect_tqdm(loggers=[logging.root]))
            self._describe()
            # redraw once a second even when no bytes arrive (a large file finishing), so the clock never freezes
            stop = threading.Event()
            ticker = threading.Thread(target=self._tick, args=(stop,), name="progress", daemon=True)
            ticker.start()
            self._stack.callback(ticker.join)
            self._stack.callback(stop.set)
        return self

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def start(self, key: str, size: int) -> None:
        with self._lock:
            if size >= LARGE:
                self._flight[key] = [0, size]
            self._describe()

    def advance(self, key: str, n: int) -> None:
        """`n` more bytes of `key` acknowledged by the store (negative: a retry takes them back)."""
        with self._lock:
            self.acknowledged += n
            if key in self._flight:
                self._flight[key][0] += n
            finished = key in self._flight and self._flight[key][0] >= self._flight[key][1]
            self._describe(refresh=False)           # the update below redraws, at tqdm's pace
            if self._bar is not None:
                self._bar.update(n)
                if finished:
                    self._bar.refresh()             # show "finishing" now, not at the next tick

    def finish(self, key: str) -> None:
        with self._lock:
            self.files_done += 1
            self._flight.pop(key, None)
            self._describe()

    def _describe(self, refresh: bool = True) -> None:
        if self._bar is None:
            return
        parts = [f"{human_size(self.acknowledged)}/{human_size(self.total_bytes)}",
                 f"{self.files_done}/{self.total_files} files"]
        names = []
        for key, (sent, size) in list(self._flight.items())[:SHOWN_IN_FLIGHT]:
            name = key.rsplit("/", 1)[-1]
            names.append(f"{name} finishing" if sent >= size else f"{name} {100 * sent // size}%")
        if len(self._flight) > SHOWN_IN_FLIGHT:
            names.append(f"+{len(self._flight) - SHOWN_IN_FLIGHT} more")
        if names:
            parts.append("sending " + ", ".join(names))
        self._bar.work = ", ".join(parts)
        if refresh:
            self._bar.refresh()
